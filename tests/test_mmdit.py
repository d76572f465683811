"""SD3 and FLUX.1 (joint attention, MMDiT) through their adapters, on tiny pipelines built from configs
(real CLIP tokenizer, a T5 encoder with the bundled sentencepiece tokenizer, tiny transformers and VAEs)."""
import csv

import numpy as np
import pytest
import torch
from diffusers.models.embeddings import apply_rotary_emb

from tsam_diffusion import TSAMConfig, TSAMPipeline
from tsam_diffusion.adapters import FluxAdapter, StableDiffusion3Adapter
from tsam_diffusion.attention import CrossAttentionRecorder
from tsam_diffusion.tiny import build_tiny_flux, build_tiny_sd3

PROMPT = "a black car and a white clock"


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def wrap(pipe):
    pipe.set_progress_bar_config(disable=True)
    return TSAMPipeline(pipe)


@pytest.fixture(scope="module")
def sd3():
    return wrap(build_tiny_sd3())


@pytest.fixture(scope="module")
def sd35():
    return wrap(build_tiny_sd3(qk_norm="rms_norm", dynamic_shifting=True, seed=1))


@pytest.fixture(scope="module")
def flux():
    return wrap(build_tiny_flux())


@pytest.fixture(scope="module")
def schnell():
    return wrap(build_tiny_flux(guidance_embeds=False, seed=1))


def test_adapters_presets_and_defaults(sd3, flux, schnell):
    assert type(sd3.adapter) is StableDiffusion3Adapter and sd3.adapter.default_preset == "sd3"
    assert type(flux.adapter) is FluxAdapter and flux.adapter.default_preset == "flux"
    assert sd3.adapter.default_layers == (2, 3)  # the middle third of 6 blocks (8-15 of SD3-medium's 24)
    assert flux.adapter.default_layers == (0, 1, 2, 3)  # the last five double-stream blocks, of 4 here
    assert sd3.adapter.sampling_settings(None, None) == (28, 7.0)
    assert flux.adapter.sampling_settings(None, None) == (28, 3.5)
    assert schnell.adapter.sampling_settings(None, None)[0] == 4  # schnell: no guidance embedding, 4 steps
    assert flux.adapter.bidirectional and not sd3.adapter.bidirectional
    assert sd3.adapter.configured(text_attention="t5").bidirectional
    assert TSAMConfig.preset("flux").kernel_size == 9 and TSAMConfig.preset("sd3").sigma == 2.0


@pytest.mark.parametrize("which, kw", [
    ("sd3", dict(num_images_per_prompt=2, negative_prompt=["blurry", "dark"])),
    ("sd35", dict(guidance_scale=1.0, height=64, width=96, max_sequence_length=32)),
    ("flux", dict(num_images_per_prompt=2)),
    ("flux", dict(true_cfg_scale=2.0, negative_prompt=["blurry", "dark"], max_sequence_length=64, height=48, width=64)),
    ("schnell", dict(guidance_scale=0.0)),
])
def test_no_guidance_is_bitwise_diffusers(request, which, kw):
    tp = request.getfixturevalue(which)
    prompts = [PROMPT, "a cat with a hat"]
    want = tp.pipe(prompts, num_inference_steps=3, generator=gen(4), output_type="np", **kw).images
    got = tp(prompts, method=None, num_inference_steps=3, generator=gen(4), output_type="np", **kw).images
    assert np.array_equal(got, want)


def _record(tp, index, text_attention=None, height=64, width=64):
    """The recorder's maps of one layer (heads kept) for PROMPT, and the layer's call arguments."""
    adapter = tp.adapter.configured(text_attention=text_attention) if text_attention else tp.adapter
    cond = adapter.encode_prompt([PROMPT], None, 1, 1.0, (height, width))
    latents = adapter.prepare_latents(1, height, width, gen(0), None)
    timesteps, _ = adapter.timesteps(4, height, width)
    layer = adapter.cross_attention_layers(height, width)[index]
    inputs = {}
    hook = layer.module.register_forward_pre_hook(lambda m, a, k: inputs.update(k), with_kwargs=True)
    recorder = CrossAttentionRecorder.of([layer], keep_heads=True)
    recorder.extra_wanted = {"text_share"}
    try:
        with torch.no_grad(), recorder.install(), recorder.capture():
            recorder.run(lambda: adapter.forward_cond(latents, timesteps[0], cond))
    finally:
        hook.remove()
    return (recorder.maps[0], recorder.extras["text_share"][0]), layer, inputs


def _renormalised(q, k, image, text):
    """The full joint softmax (float64): its image-query/text-key block renormalised over the text keys,
    and each image query's mass on the text keys."""
    P = torch.softmax(q.double() @ k.double().transpose(-1, -2) / q.shape[-1] ** 0.5, -1)
    block = P[:, :, image][:, :, :, text]
    return block / block.sum(-1, keepdim=True), block.sum(-1)


@pytest.mark.parametrize("which", ["sd3", "sd35"])
def test_sd3_maps_are_the_joint_probabilities_renormalised_over_text(request, which):
    tp = request.getfixturevalue(which)
    (A, share), layer, inputs = _record(tp, 2)
    attn, x, e = layer.module, inputs["hidden_states"], inputs["encoder_hidden_states"]

    def heads(t, norm):
        t = t.view(1, -1, attn.heads, t.shape[-1] // attn.heads).transpose(1, 2)
        return t if norm is None else norm(t)

    with torch.no_grad():  # the joint sequence as JointAttnProcessor2_0 orders it: [image, text]
        q = torch.cat([heads(attn.to_q(x), attn.norm_q), heads(attn.add_q_proj(e), attn.norm_added_q)], 2)
        k = torch.cat([heads(attn.to_k(x), attn.norm_k), heads(attn.add_k_proj(e), attn.norm_added_k)], 2)
    n_img, n_txt = x.shape[1], e.shape[1]
    want, want_share = _renormalised(q, k, slice(0, n_img), slice(n_img, None))
    assert A.shape == (1, attn.heads, 256, 77 + 256) and n_txt == 333  # 16x16 patches; CLIP 77 + T5 256
    assert torch.allclose(A.double(), want, atol=1e-6)
    assert torch.allclose(share.double(), want_share, rtol=1e-4) and share.shape == A.shape[:3]  # text share m_a
    assert torch.allclose(A.sum(-1), torch.ones(()), atol=1e-5)
    assert A.std(-2).mean() > 0.1 * A.mean()  # not uniform over image positions (the tiny model's maps are sharpened)


def test_flux_maps_are_the_joint_probabilities_renormalised_over_text(flux):
    (A, share), layer, inputs = _record(flux, 3, height=48, width=64)
    attn, x, e = layer.module, inputs["hidden_states"], inputs["encoder_hidden_states"]
    rotary = inputs["image_rotary_emb"]

    def heads(t, norm):
        return norm(t.unflatten(-1, (-1, attn.head_dim)))

    with torch.no_grad():  # FluxAttnProcessor's order: [text, image], rotary on the joint sequence
        q = torch.cat([heads(attn.add_q_proj(e), attn.norm_added_q), heads(attn.to_q(x), attn.norm_q)], 1)
        k = torch.cat([heads(attn.add_k_proj(e), attn.norm_added_k), heads(attn.to_k(x), attn.norm_k)], 1)
        q, k = (apply_rotary_emb(t, rotary, sequence_dim=1).transpose(1, 2) for t in (q, k))
    n_txt = e.shape[1]
    want, want_share = _renormalised(q, k, slice(n_txt, None), slice(0, n_txt))
    assert A.shape == (1, attn.heads, 12 * 16, 512)  # 48x64 px: 12x16 packed patches; T5's 512 positions
    assert torch.allclose(A.double(), want, atol=1e-6)
    assert torch.allclose(share.double(), want_share, rtol=1e-4) and share.shape == A.shape[:3]  # text share m_a
    assert torch.allclose(A.sum(-1), torch.ones(()), atol=1e-5)


def test_text_attention_positions(sd3, flux):
    clip = sd3.adapter.text_attention([PROMPT])[0]
    assert clip.tokens == ["a", "black", "car", "and", "a", "white", "clock"] and clip.keep.tolist() == list(range(1, 8))
    assert clip.attentions.shape[:2] == (2, 1)  # the two CLIP encoders, each averaged over layers and heads
    t5 = sd3.adapter.configured(text_attention="t5").text_attention([PROMPT])[0]
    tokenizer = sd3.pipe.tokenizer_3
    ids = tokenizer(PROMPT).input_ids[:-1]  # without </s>
    assert t5.keep.tolist() == [77 + i for i in range(len(ids))]  # after the 77 CLIP positions
    assert "".join(t5.tokens) == PROMPT.replace(" ", "")
    assert t5.attentions.shape[-1] == 256  # the padded sequence the pipeline gives T5 (unmasked)
    fx = flux.adapter.text_attention([PROMPT])[0]
    assert fx.keep.tolist() == list(range(len(ids))) and fx.attentions.shape[-1] == 512
    with pytest.raises(ValueError, match="text_attention must be one of clip, t5"):
        sd3(PROMPT, text_attention="both")
    with pytest.raises(ValueError, match="max_sequence_length must be 1-512"):
        flux(PROMPT, max_sequence_length=600)
    with pytest.raises(TypeError, match="its options are: max_sequence_length, true_cfg_scale"):
        flux(PROMPT, guidance_rescale=0.7)


@pytest.mark.parametrize("which, later, text_attention", [
    ("sd3", lambda t: t.transformer_blocks[4], "clip"),
    ("sd3", lambda t: t.transformer_blocks[4], "t5"),
    ("flux", lambda t: t.single_transformer_blocks[0], None),
])
def test_update_reaches_the_latent_and_stops_after_the_last_block_read(request, which, later, text_attention):
    tp = request.getfixturevalue(which)
    ran = []
    hook = later(tp.pipe.transformer).register_forward_pre_hook(lambda m, a, k: ran.append(torch.is_grad_enabled()),
                                                                with_kwargs=True)
    options = {"text_attention": text_attention} if text_attention else {}
    try:
        plain = tp(PROMPT, method=None, num_inference_steps=2, generator=gen(0), output_type="latent", **options).images
        out = tp(PROMPT, method=TSAMConfig.preset(tp.adapter.default_preset, alpha=2000.0, update_steps=(0,)),
                 num_inference_steps=2, generator=gen(0), output_type="latent", **options)
    finally:
        hook.remove()
    d = out.diagnostics
    assert True not in ran and False in ran  # sampling ran the later block; the update's pass never did
    assert len(d.updates) == 1 and bool(d.updates[0].applied.all()) and torch.isfinite(d.updates[0].loss).all()
    assert (out.images - plain).abs().amax() > 1e-4  # the gradient reached the latent
    assert d.map_size == (16, 16) and d.layers == [f"transformer_blocks.{i}.attn" for i in tp.adapter.default_layers]


@pytest.mark.parametrize("which", ["sd3", "flux"])
def test_update_pass_gets_the_conditional_inputs_of_sampling(request, which):
    """The update's pass gets the conditional half of sampling's inputs: SD3's pooled embedding and text
    (CFG batch [uncond, cond]); Flux's guidance embedding, pooled embedding, text and position ids."""
    tp = request.getfixturevalue(which)
    calls = []
    hook = tp.pipe.transformer.register_forward_pre_hook(
        lambda m, a, k: calls.append((torch.is_grad_enabled(), {n: v.clone() for n, v in k.items() if torch.is_tensor(v)})),
        with_kwargs=True)
    try:
        tp(PROMPT, method=TSAMConfig.preset(tp.adapter.default_preset, update_steps=(0,)), num_inference_steps=2,
           generator=gen(0), output_type="latent", negative_prompt="blurry")
    finally:
        hook.remove()
    update = next(kw for grad, kw in calls if grad)
    sampling = next(kw for grad, kw in calls if not grad)
    half = slice(-1, None)  # the conditional row (SD3: after the negative prompt's)
    for name in ["encoder_hidden_states", "pooled_projections", "guidance", "txt_ids", "img_ids"]:
        if name in sampling:
            want = sampling[name][half] if name in ("encoder_hidden_states", "pooled_projections", "guidance") else sampling[name]
            assert torch.equal(update[name], want), name
    assert ("guidance" in update) == (which == "flux")


@pytest.mark.parametrize("which", ["sd3", "flux"])
def test_guided_batches_equal_single_runs(request, which):
    tp = request.getfixturevalue(which)
    cfg = TSAMConfig.preset(tp.adapter.default_preset, alpha=200.0)
    kw = dict(num_inference_steps=4, output_type="latent")
    plain = tp([PROMPT, "a cat with a hat"], method=None, generator=[gen(0), gen(1)], **kw).images
    both = tp([PROMPT, "a cat with a hat"], method=cfg, generator=[gen(0), gen(1)], **kw)
    one = tp("a cat with a hat", method=cfg, generator=gen(1), **kw)
    assert (both.images - plain).abs().amax() > 1e-4
    diff = (both.images[1:] - one.images).abs().amax()
    assert diff < 1e-5 * plain.abs().amax(), diff


@pytest.mark.parametrize("which", ["sd3", "flux"])
def test_every_method_runs(request, which):
    tp = request.getfixturevalue(which)
    for method, tokens in [("attend-excite", "car,clock"), ("conform", "black car|white clock"),
                           ("syngen", "black car|white clock"), ("tsam", None)]:
        out = tp(PROMPT, method=method, tokens=tokens, num_inference_steps=2, generator=gen(0), output_type="latent",
                 record_maps=[1])
        d = out.diagnostics
        assert d.updates and d.map_size == (16, 16), method
        assert d.maps[1].shape == (1, 256, 7), method  # 7 content tokens (CLIP for SD3; T5 pieces for Flux)


def test_fused_projections_are_refused_clearly(sd3):
    sd3.pipe.transformer.fuse_qkv_projections()
    try:
        with pytest.raises(RuntimeError, match="unfuse_qkv_projections"):
            sd3(PROMPT, num_inference_steps=1, generator=gen(0), output_type="latent")
    finally:
        sd3.pipe.transformer.unfuse_qkv_projections()


def test_analyze_text_share(flux, tmp_path):
    """``tsam analyze attention --text-share``: per seed and block read, the text share and the pairs' map
    cosines from renormalised and raw joint maps; on a cross-attention model it says it does not apply."""
    from tsam_diffusion.analysis.attention import analyze_attention
    from tsam_diffusion.analysis.text_share import text_share_summary
    from tsam_diffusion.bench.suites import Prompt

    prompts = [Prompt("p:1", PROMPT, "p"), Prompt("p:2", "a red cube and a blue ball", "p")]
    summary = analyze_attention(flux, prompts, tmp_path, steps=(1,), seeds=(0, 1), num_inference_steps=2,
                                text_share=True, progress=False, bootstrap=50)
    rows = list(csv.DictReader(open(tmp_path / "text_share.csv")))
    assert len(rows) == 2 * 2 * len(flux.adapter.default_layers)
    for r in rows:
        assert 0 < float(r["text_share_mean"]) <= 1 and float(r["text_share_cv"]) >= 0
        assert abs(float(r["cos_renormalised"]) - float(r["cos_raw"])) <= float(r["cos_abs_diff_max"]) + 1e-6
    assert set(summary["text_share"]["per_layer"]) == {f"transformer_blocks.{i}.attn" for i in flux.adapter.default_layers}
    assert "SD3 and Flux" in text_share_summary([])["note"]
