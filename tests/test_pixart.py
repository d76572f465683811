"""PixArt-alpha and PixArt-Sigma through ``PixArtAlphaAdapter`` / ``PixArtSigmaAdapter``, on tiny pipelines
built from configs: a tiny T5 encoder with a sentencepiece unigram tokenizer trained here, a tiny
PixArtTransformer2DModel (20 blocks), an 8x VAE and PixArt's DPM-Solver++."""
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from tsam_diffusion import TSAMConfig, TSAMPipeline
from tsam_diffusion.adapters import PixArtAlphaAdapter, PixArtSigmaAdapter, adapter_for
from tsam_diffusion.adapters.base import eager_attention
from tsam_diffusion.functional import text_attention_matrix
from tsam_diffusion.methods import AttendExciteConfig
from tsam_diffusion.tiny import build_tiny_pixart

PROMPT = "a black car and a white clock"
FEW = TSAMConfig.preset("pixart", refinement_iterations=1)  # the paper's preset, one refinement update


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def t5_tok(tmp_path_factory):
    """A sentencepiece unigram model trained here, loaded as transformers' T5Tokenizer."""
    import sentencepiece as spm
    from transformers import T5Tokenizer

    d = tmp_path_factory.mktemp("spiece")
    words = ("a black car and white clock on the table near red cube with blue sphere cat dog wearing hat "
             "in front of green apple").split()
    (d / "corpus.txt").write_text("\n".join(" ".join(words[i:] + words[:i]) for i in range(len(words))) * 20)
    spm.SentencePieceTrainer.train(input=str(d / "corpus.txt"), model_prefix=str(d / "spiece"), vocab_size=60,
                                   hard_vocab_limit=False, minloglevel=2, model_type="unigram", pad_id=0, eos_id=1,
                                   unk_id=2, bos_id=-1, num_threads=1)
    return T5Tokenizer.from_pretrained(str(d), extra_ids=0)


@pytest.fixture(scope="module", params=[False, True], ids=["alpha", "sigma"])
def pixart(request, t5_tok):
    pipe = build_tiny_pixart(sigma=request.param, tokenizer=t5_tok)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def alpha(t5_tok):
    pipe = build_tiny_pixart(tokenizer=t5_tok)
    pipe.set_progress_bar_config(disable=True)
    return TSAMPipeline(pipe)


def test_adapter_is_chosen_by_pipeline_class(pixart):
    adapter = adapter_for(pixart)
    assert type(adapter) is (PixArtSigmaAdapter if "Sigma" in type(pixart).__name__ else PixArtAlphaAdapter)
    assert adapter.default_preset == "pixart" and adapter.bidirectional and adapter.default_steps == 50
    assert adapter.options["max_sequence_length"] == (300 if "Sigma" in type(pixart).__name__ else 120)


@pytest.mark.parametrize("size", [(256, 256), (256, 192)])
def test_no_guidance_is_bitwise_diffusers(pixart, size):
    """Resolution binning (on by default: 256x192 is sampled at its bin and resized back), caption
    handling, learned sigma and CFG exactly as the diffusers pipeline."""
    kw = dict(num_inference_steps=3, height=size[0], width=size[1], output_type="np", clean_caption=False)
    want = pixart([PROMPT, "a cat"], generator=gen(2), **kw).images
    got = TSAMPipeline(pixart)([PROMPT, "a cat"], method=None, generator=gen(2), **kw)
    assert want.shape == (2, *size, 3) and np.array_equal(got.images, want)


@pytest.mark.parametrize("scheduler", ["dpm", "ddim"])
def test_no_binning_and_one_step_are_bitwise_diffusers(pixart, scheduler):
    """Without binning, and with one step, where PixArt-alpha takes the scheduler's predicted original
    sample (its DMD model; DPM-Solver returns none, so diffusers' own one-step call needs DDIM)."""
    kw = dict(height=192, width=256, use_resolution_binning=False, output_type="latent", negative_prompt="blurry")
    before = pixart.scheduler
    if scheduler == "ddim":
        pixart.scheduler = DDIMScheduler.from_config(before.config)
    try:
        for steps in ((1, 2) if scheduler == "ddim" else (2,)):
            want = pixart(PROMPT, num_inference_steps=steps, generator=gen(5), **kw).images
            got = TSAMPipeline(pixart)(PROMPT, method=None, num_inference_steps=steps, generator=gen(5), **kw).images
            assert want.shape == (1, 4, 24, 32) and torch.equal(got, want)
    finally:
        pixart.scheduler = before


def test_text_attention_is_t5_over_real_tokens(pixart):
    """Content tokens are the real tokens before </s>; padding to the batch's longest prompt gives the
    real tokens the same attention as the pipeline's padding to max_sequence_length."""
    adapter = adapter_for(pixart)
    texts = adapter.text_attention([PROMPT, "a cat"])
    tok, enc = pixart.tokenizer, pixart.text_encoder
    batch = tok([PROMPT.lower()], padding="max_length", max_length=120, truncation=True, return_tensors="pt")
    ids = batch.input_ids[0].tolist()
    n = ids.index(tok.eos_token_id)
    assert texts[0].keep.tolist() == list(range(n)) and len(texts[1].tokens) < n
    assert "".join(texts[0].tokens) == PROMPT.replace(" ", "")
    with torch.no_grad(), eager_attention(enc):
        full = torch.stack(enc(batch.input_ids, attention_mask=batch.attention_mask, output_attentions=True).attentions, 1)[0]
    T_ref = text_attention_matrix(full, torch.arange(n), bidirectional=True, gamma=1.0)
    T = text_attention_matrix(texts[0].attentions, texts[0].keep, bidirectional=True, gamma=1.0)
    assert torch.allclose(T, T_ref, atol=1e-6)
    assert torch.allclose(T, torch.tril(T)) and torch.allclose(T.sum(1), torch.ones(n), atol=1e-5)  # B.2: causal, rows sum to 1
    # and T-SAM's T is appendix B.2's tril((T' + T'^T) / 2) of it, raised to the preset's gamma
    out = TSAMPipeline(pixart)(PROMPT, method=FEW.replace(update_steps=(0,), refinement_steps=()), num_inference_steps=2,
                               output_type="latent", clean_caption=False)
    want = text_attention_matrix(full, torch.arange(n), bidirectional=True, gamma=FEW.gamma)
    assert torch.allclose(out.diagnostics.T[0], want, atol=1e-6)
    assert not torch.allclose(want, text_attention_matrix(full, torch.arange(n), bidirectional=False, gamma=FEW.gamma), atol=1e-3)


def test_reads_blocks_10_to_18_and_stops_after_block_18(alpha):
    blocks = alpha.pipe.transformer.transformer_blocks
    ran = []
    hooks = [b.register_forward_pre_hook(lambda m, a, i=i: ran.append((i, torch.is_grad_enabled()))) for i, b in enumerate(blocks)]
    try:
        out = alpha(PROMPT, method=FEW.replace(update_steps=(0,), refinement_steps=()), num_inference_steps=2,
                    generator=gen(0), output_type="latent", clean_caption=False)
    finally:
        for h in hooks:
            h.remove()
    d = out.diagnostics
    assert d.layers == [f"transformer_blocks.{i}.attn2" for i in range(10, 19)] and d.map_size == (16, 16)
    update_pass = [i for i, grad in ran if grad]
    assert update_pass == list(range(19))  # one update: blocks 0-18, never 19
    assert len(d.updates) == 1 and bool(d.updates[0].applied.all())


def test_layers_by_block_index_and_bad_index(alpha):
    out = alpha(PROMPT, method=FEW.replace(layers=(2, 3), refinement_steps=()), num_inference_steps=2, generator=gen(0),
                output_type="latent", clean_caption=False)
    assert out.diagnostics.layers == ["transformer_blocks.2.attn2", "transformer_blocks.3.attn2"]
    with pytest.raises(ValueError, match="unknown cross-attention layers \\[25\\].*indices 0-19"):
        alpha(PROMPT, method=FEW.replace(layers=(25,)), num_inference_steps=2, output_type="latent", clean_caption=False)


def test_guidance_moves_the_latent_and_batches_equal_single_runs(alpha):
    cfg = FEW
    kw = dict(num_inference_steps=4, output_type="latent", clean_caption=False)
    plain = alpha([PROMPT, "a cat wearing a hat"], method=None, generator=[gen(0), gen(1)], **kw).images
    both = alpha([PROMPT, "a cat wearing a hat"], method=cfg, generator=[gen(0), gen(1)], **kw)
    one = alpha("a cat wearing a hat", method=cfg, generator=gen(1), **kw)
    scale = plain.abs().amax()  # a random model's DPM-Solver++ latents are large (|z| ~ 400)
    assert (both.images - plain).abs().amax() > 1e-4 * scale
    assert (both.images[1:] - one.images).abs().amax() < 1e-5 * scale  # float sums differ with batch size and threads
    first = both.diagnostics.updates[0]
    assert torch.isfinite(first.loss).all() and bool(first.applied.all())
    # the loss is eq. 14 of T against S at the first update, recomputed from the recorded maps
    assert both.diagnostics.T[0].shape[0] == len(both.diagnostics.tokens[0])


def test_attend_and_excite_finds_t5_pieces(alpha):
    out = alpha(PROMPT, method=AttendExciteConfig(update_steps=(0,), refinement_steps=(), thresholds=()), tokens="car,clock",
                num_inference_steps=2, generator=gen(0), output_type="latent", clean_caption=False)
    assert len(out.diagnostics.updates) == 1 and torch.isfinite(out.diagnostics.updates[0].loss).all()
    with pytest.raises(ValueError, match="'boat' is not in the prompt"):
        alpha(PROMPT, method="attend-excite", tokens="car,boat", num_inference_steps=2, output_type="latent",
              clean_caption=False)


def test_bad_options_and_sizes(alpha):
    with pytest.raises(TypeError, match="clean_caption, max_sequence_length, use_resolution_binning"):
        alpha(PROMPT, method=None, num_inference_steps=1, binning=False)
    with pytest.raises(ValueError, match="multiples of 16"):
        alpha(PROMPT, method=None, num_inference_steps=1, height=200, width=256, use_resolution_binning=False)
    with pytest.raises(ValueError, match="DPMSolverMultistepScheduler does not return; use 2 or more steps"):
        alpha(PROMPT, method=None, num_inference_steps=1, output_type="latent", clean_caption=False)


def test_truncation_to_max_sequence_length_warns(alpha):
    long = " ".join(["a black car and a white clock"] * 4)
    with pytest.warns(UserWarning, match="limit of 8 tokens"):
        out = alpha(long, method=FEW.replace(update_steps=(0,), refinement_steps=()), num_inference_steps=2,
                    output_type="latent", clean_caption=False, max_sequence_length=8)
    assert len(out.diagnostics.tokens[0]) == 7  # 8 with </s>


def test_maps_use_the_prompt_mask(alpha):
    """The recorded probabilities are the model's: padded text positions (a -10000 bias) get none."""
    from tsam_diffusion.attention import CrossAttentionRecorder

    adapter = alpha.adapter.configured(clean_caption=False)
    cond = adapter.encode_prompt(["a cat", PROMPT], None, 1, 4.5)
    layers = adapter.cross_attention_layers(256, 256)
    recorder = CrossAttentionRecorder({layers[10].name: layers[10].module})
    z = torch.randn(2, 4, 32, 32, generator=gen(0))
    with recorder.install(), recorder.capture():
        recorder.run(lambda: adapter.forward_cond(z, torch.tensor(500), cond))
    A = recorder.mean()  # [B, 256, 120]
    real = cond.extra["cond_mask"].bool()
    assert A.shape == (2, 256, 120) and real[0].sum() < real[1].sum()
    assert torch.allclose(A.sum(-1), torch.ones(2, 256), atol=1e-5)
    assert A[~real[:, None, :].expand_as(A)].abs().max() < 1e-6


def test_caption_cleaning_is_the_pipelines(pixart):
    """clean_caption=True (diffusers' default; beautifulsoup4 and ftfy are in the test extra): the same
    images as diffusers, and T over the cleaned caption's tokens."""
    messy = "A <b>black</b> car &amp; a white clock https://example.com/x.png"
    want = pixart(messy, num_inference_steps=2, generator=gen(1), output_type="latent").images
    got = TSAMPipeline(pixart)(messy, method=None, num_inference_steps=2, generator=gen(1), output_type="latent").images
    assert torch.equal(got, want)
    cleaned = pixart._text_preprocessing(messy, clean_caption=True)[0]
    assert "<b>" not in cleaned and "https" not in cleaned
    text = adapter_for(pixart).text_attention([messy])[0]
    pieces = pixart.tokenizer.convert_ids_to_tokens(pixart.tokenizer(cleaned).input_ids[:-1])
    assert text.tokens == [t.lstrip("▁") or t for t in pieces] and text.tokens[:3] == ["a", "black", "car"]


def test_checkpointing_gives_the_same_update(alpha):
    cfg = FEW.replace(update_steps=(0,), refinement_steps=())
    kw = dict(num_inference_steps=2, output_type="latent", clean_caption=False)
    plain = alpha(PROMPT, method=cfg, generator=gen(3), **kw)
    ckpt = alpha(PROMPT, method=cfg.replace(checkpointing=True), generator=gen(3), **kw)
    assert not alpha.pipe.transformer.is_gradient_checkpointing  # switched off again after the call
    scale = plain.images.abs().amax()
    assert (ckpt.images - plain.images).abs().amax() < 1e-6 * scale
    assert torch.allclose(ckpt.diagnostics.updates[0].loss, plain.diagnostics.updates[0].loss)


def test_micro_conditions_at_1024_are_the_pipelines(t5_tok):
    """PixArt-alpha at sample size 128 (its 1024px model) embeds the sampled resolution and aspect ratio:
    built once per call, for both CFG branches and for the update pass, as the pipeline does."""
    pipe = build_tiny_pixart(tokenizer=t5_tok, sample_size=128)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.transformer.use_additional_conditions  # set from sample_size 128
    kw = dict(num_inference_steps=2, height=832, width=1152, output_type="latent", clean_caption=False)  # a bin
    want = pipe(PROMPT, generator=gen(0), **kw).images
    got = TSAMPipeline(pipe)(PROMPT, method=None, generator=gen(0), **kw).images
    assert want.shape[-2:] == (104, 144) and torch.equal(got, want)
    cond = adapter_for(pipe).encode_prompt([PROMPT], None, 1, 4.5, (832, 1152))
    assert cond.extra["added_cond"]["resolution"].tolist() == [[832.0, 1152.0]]
    assert torch.allclose(cond.extra["added"]["aspect_ratio"].flatten(), torch.full((2,), 832 / 1152))
