"""tsam-mini: pipeline, T-SAM on it (BERT, bidirectional), saving/loading, and resumable training."""
import numpy as np
import pytest
import torch

from tsam_diffusion import TSAMConfig, TSAMPipeline
from tsam_diffusion.mini.model import TSAMMiniPipeline, build_unet, load_text_encoder, sampling_scheduler
from tsam_diffusion.mini.train import TrainConfig, train

PROMPT = "a red circle and a blue square"


@pytest.fixture(scope="module")
def mini():
    tokenizer, text_encoder = load_text_encoder()
    pipe = TSAMMiniPipeline(unet=build_unet().eval(), text_encoder=text_encoder, tokenizer=tokenizer, scheduler=sampling_scheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_no_guidance_is_bitwise_the_pipeline(mini):
    want = mini([PROMPT, "a green cross"], num_inference_steps=4, num_images_per_prompt=2, generator=gen(), output_type="np").images
    got = TSAMPipeline(mini)([PROMPT, "a green cross"], tsam=None, num_inference_steps=4, guidance_scale=4.0,
                             num_images_per_prompt=2, generator=gen(), output_type="np").images
    assert np.array_equal(got, want) and want.shape == (4, 32, 32, 3)


def test_tsam_on_mini_uses_bert_tokens_and_16x16_maps(mini):
    cfg = TSAMConfig(alpha=50.0, gamma=2.0, update_steps=(0, 1), reference_steps=4)
    out = TSAMPipeline(mini)([PROMPT, "a green cross"], tsam=cfg, num_inference_steps=4, guidance_scale=4.0, generator=gen(),
                             output_type="pt")
    d = out.diagnostics
    assert d.tokens == [["a", "red", "circle", "and", "a", "blue", "square"], ["a", "green", "cross"]]
    assert d.map_size == (16, 16) and len(d.updates) == 2 and torch.isfinite(d.losses).all()
    assert out.images.shape == (2, 3, 32, 32)


def test_text_self_attention_binds_colors_and_has_a_sink(mini):
    """all-MiniLM-L6-v2's self-attention (T', eq. 2): [CLS] sink; a shape attends to its own colour more."""
    from tsam_diffusion.adapters import adapter_for

    prompts = ["a red circle and a blue square", "a green cross and a yellow triangle", "a white square and a purple circle"]
    texts = adapter_for(mini).text_attention(prompts)
    bound, unbound, sink, other = [], [], [], []
    for t in texts:
        T = t.attentions.float().mean(dim=(0, 1))  # [N, N] averaged over layers and heads
        sym = (T + T.T) / 2
        # content positions: 1 a, 2 colour1, 3 shape1, 4 and, 5 a, 6 colour2, 7 shape2
        bound += [sym[3, 2].item(), sym[7, 6].item()]
        unbound += [sym[3, 6].item(), sym[7, 2].item()]
        sink.append(T[1:8, 0].mean().item())
        other.append(T[1:8, 1:8].mean().item())
    assert np.mean(bound) > 1.3 * np.mean(unbound)
    assert np.mean(sink) > 2 * np.mean(other)


def test_save_and_load(mini, tmp_path):
    mini.save_pretrained(tmp_path / "m")
    loaded = TSAMMiniPipeline.from_pretrained(tmp_path / "m")
    loaded.set_progress_bar_config(disable=True)
    a = mini(PROMPT, num_inference_steps=3, generator=gen(), output_type="np").images
    b = loaded(PROMPT, num_inference_steps=3, generator=gen(), output_type="np").images
    assert np.array_equal(a, b)
    assert TSAMPipeline.from_pretrained(str(tmp_path / "m")).adapter.__class__.__name__ == "MiniAdapter"
    with pytest.raises(OSError, match="not a tsam-mini model folder"):
        TSAMMiniPipeline.from_pretrained(tmp_path)


def test_training_resumes_exactly(tmp_path):
    cfg = TrainConfig(steps=4, batch_size=4, warmup=2, checkpoint_every=2, log_every=1)
    straight = train(tmp_path / "a", cfg, progress=False)
    train(tmp_path / "b", cfg, stop_after=2, progress=False)  # "killed" after 2 steps
    resumed = train(tmp_path / "b", cfg, progress=False)
    ua = TSAMMiniPipeline.from_pretrained(straight).unet.state_dict()
    ub = TSAMMiniPipeline.from_pretrained(resumed).unet.state_dict()
    for k in ua:
        torch.testing.assert_close(ua[k], ub[k], rtol=1e-5, atol=1e-6)
    log = (tmp_path / "b" / "train_log.csv").read_text().splitlines()
    assert log[0] == "step,loss,lr,seconds,grounding" and [r.split(",")[0] for r in log[1:]] == ["1", "2", "3", "4"]
    with pytest.raises(ValueError, match="resume with the same settings"):
        train(tmp_path / "b", TrainConfig(steps=4, batch_size=8), progress=False)


def test_train_command_stops_after_and_resumes(tmp_path, capsys):
    from tsam_diffusion.cli import main

    args = ["mini", "train", "--out", str(tmp_path), "--steps", "3", "--batch-size", "2"]
    assert main([*args, "--stop-after", "2"]) == 0
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["step"] == 2
    assert main(args) == 0
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["step"] == 3
    assert main(["mini", "train", "--out", str(tmp_path), "--steps", "0"]) == 2


def test_bundled_model_is_small_float16_on_disk_and_draws_single_objects():
    """The shipped tsam-mini: <= 20 MB, loads as float32 with its own defaults, and draws the named
    shape in the named colour (judged exactly) for most single-object samples: all 28 single-object
    prompts x 2 seeds here (49 of 56 with v2); the model card's figure, 91.4% [87.4, 95.4], is the 896
    single-object samples of shapes-test. A broken model (the 30% candidate of the ablations) fails."""
    from tsam_diffusion.mini.judge import judge
    from tsam_diffusion.mini.model import bundled_dir
    from tsam_diffusion.mini.world import COLORS, SHAPES, caption

    files = [f for f in bundled_dir().rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) <= 20 * 2**20
    tsam = TSAMPipeline.from_pretrained("tsam-mini")
    assert tsam.pipe.unet.dtype == torch.float32
    assert (tsam.adapter.default_preset, tsam.adapter.default_steps, tsam.adapter.default_guidance_scale) == ("mini", 25, 4.0)
    prompts = [caption([(shape, colour)], "one") for shape in SHAPES for colour in COLORS]
    out = tsam(prompts, tsam=None, num_images_per_prompt=2, generator=[gen(s) for s in range(56)], output_type="np")
    images = np.round(out.images * 255).astype(np.uint8)
    whole = [judge(img, prompts[k // 2]).whole for k, img in enumerate(images)]
    assert sum(whole) >= 0.8 * 56, [prompts[k // 2] for k, ok in enumerate(whole) if not ok]
    with pytest.raises(ValueError, match="32x32 images only"):
        tsam("a red circle", height=64, width=64)


def test_long_prompt_is_flagged_truncated(mini):
    from tsam_diffusion.adapters import adapter_for

    with pytest.warns(UserWarning, match="truncated"):
        (long,) = adapter_for(mini).text_attention(["a red circle and " * 8 + "a blue square"])
    (short,) = adapter_for(mini).text_attention([PROMPT])
    assert long.truncated and len(long.tokens) == 22 and not short.truncated


def test_unknown_characters_are_named_in_a_warning(mini, tsam_pipe, recwarn):
    """Emoji and CJK characters are [UNK] to MiniLM's WordPiece vocabulary; the warning names them.
    CLIP's byte-level BPE reads every character, and its unknown token is its end-of-text token:
    no false warning there."""
    with pytest.warns(UserWarning, match=r"does not know '🔴', '形', '✨' and reads it as \[UNK\]"):
        TSAMPipeline(mini)("a 🔴 red circle and a blue 方形 square ✨", tsam=None, num_inference_steps=1)
    recwarn.clear()
    TSAMPipeline(mini)(PROMPT, tsam=None, num_inference_steps=1)
    tsam_pipe("a 🔴 red car", tsam=None, num_inference_steps=1, output_type="latent")
    assert not [w for w in recwarn if "does not know" in str(w.message)]


def test_text_context_reads_the_encoder_as_configured():
    """What the cross-attention reads: BERT's own hidden states at the chosen depth; [CLS]/[SEP]
    hidden from the cross-attention when asked, an empty caption keeping [CLS]."""
    from tsam_diffusion.mini.model import TextContext, encode_texts

    tokenizer, encoder = load_text_encoder()
    texts = [PROMPT, ""]
    ref = encoder(**tokenizer(texts, padding="max_length", max_length=24, return_tensors="pt"), output_hidden_states=True)
    for source, index in (("last", 6), ("embeddings", 0), ("layer2", 2)):
        hidden, mask = encode_texts(tokenizer, encoder, texts, "cpu", TextContext(source))
        torch.testing.assert_close(hidden, ref.hidden_states[index])
        assert mask[0, :9].tolist() == [1] * 9 and mask[1, :3].tolist() == [1, 1, 0]  # [CLS] 7 words [SEP]
    _, mask = encode_texts(tokenizer, encoder, texts, "cpu", TextContext("last", special_tokens=False))
    assert mask[0, :9].tolist() == [0] + [1] * 7 + [0] and mask[1].tolist() == [1] + [0] * 23
    with pytest.raises(ValueError, match="source must be one of"):
        TextContext("layer9")


def test_training_other_architectures_and_loading_them(tmp_path):
    """`tsam mini train` trains the ablations' configurations; the model folder remembers what its
    cross-attention reads, so that sampling reads captions as training did."""
    from tsam_diffusion.adapters import adapter_for
    from tsam_diffusion.cli import main
    from tsam_diffusion.mini.model import TextContext

    args = ["mini", "train", "--out", str(tmp_path), "--steps", "2", "--batch-size", "2", "--context", "embeddings",
            "--no-special-tokens", "--heads", "4", "--cross-attention-32"]
    assert main(args) == 0
    pipe = TSAMMiniPipeline.from_pretrained(tmp_path / "model")
    assert pipe.text_context == TextContext("embeddings", special_tokens=False)
    layers = adapter_for(pipe).cross_attention_layers(32, 32)
    assert {(layer.height, layer.width) for layer in layers} == {(32, 32), (16, 16), (8, 8)}
    assert {layer.module.heads for layer in layers} == {4}
    _, _, embeds, mask = pipe.encode_prompt([PROMPT], 1, None, True)
    assert mask[1, 0] == 0 and mask[0, 0] == 1  # cond: [CLS] hidden; uncond (empty): [CLS] kept
    out = TSAMPipeline(pipe)(PROMPT, num_inference_steps=2, generator=gen(), output_type="np")
    assert np.isfinite(out.images).all() and out.diagnostics.map_size == (16, 16)
    assert main([*args[:-6], "--context", "last"]) == 2  # resuming with another architecture is refused
    # the bundled model (v2) reads the input embeddings without [CLS]/[SEP]; a folder without
    # tsam_mini.json (v1's predates it) reads the last layer, with [CLS]/[SEP]
    assert TSAMPipeline.from_pretrained("tsam-mini").pipe.text_context == TextContext("embeddings", special_tokens=False)
    (tmp_path / "model" / "tsam_mini.json").unlink()
    assert TSAMMiniPipeline.from_pretrained(tmp_path / "model").text_context == TextContext()


def test_checkpoints_from_before_the_architecture_options_resume(tmp_path):
    """A checkpoint whose config predates a field resumes with recipe v1's value for it (what it was
    trained with), and is refused with another recipe."""
    from tsam_diffusion.mini.train import RECIPES

    cfg = TrainConfig(steps=2, batch_size=2, warmup=1, **RECIPES["v1"])
    train(tmp_path, cfg, stop_after=1, progress=False)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    for key in ("context", "special_tokens", "heads", "cross_attention_32", "grounding"):
        del state["config"][key]
    torch.save(state, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="resume with the same settings"):
        train(tmp_path, TrainConfig(steps=2, batch_size=2, warmup=1, **RECIPES["grounded"]), progress=False)
    train(tmp_path, cfg, progress=False)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["step"] == 2


def test_train_recipes_and_overrides(tmp_path):
    """`--recipe` names a configuration (default: the bundled model's, v2); any option overrides it."""
    from tsam_diffusion.cli import main
    from tsam_diffusion.mini.train import DEFAULT_RECIPE, RECIPES

    def config(*extra: str) -> dict:
        out = tmp_path / str(len(list(tmp_path.iterdir())))
        assert main(["mini", "train", "--out", str(out), "--steps", "1", "--batch-size", "2", *extra]) == 0
        state = torch.load(out / "checkpoint.pt", weights_only=False)["config"]
        return {k: state[k] for k in RECIPES["v1"]}

    assert DEFAULT_RECIPE == "v2"
    assert config() == RECIPES[DEFAULT_RECIPE] == {k: getattr(TrainConfig(), k) for k in RECIPES["v1"]}
    assert config("--recipe", "v1") == RECIPES["v1"]
    assert config("--recipe", "grounded") == RECIPES["grounded"]
    assert config("--recipe", "grounded", "--grounding", "0.5", "--special-tokens") == {
        **RECIPES["grounded"], "grounding": 0.5, "special_tokens": True}
