"""SDXL through ``StableDiffusionXLAdapter``, on a tiny pipeline built from configs (two CLIP text
encoders with the real tokenizer, a UNet with SDXL's block types and added conditions)."""
import numpy as np
import pytest
import torch

from tsam_diffusion import TSAMConfig, TSAMPipeline
from tsam_diffusion.adapters import StableDiffusionXLAdapter, adapter_for
from tsam_diffusion.adapters.clip import clip_text_attention
from tsam_diffusion.functional import text_attention_matrix
from tsam_diffusion.tiny import build_tiny_sdxl

PROMPT = "a black car and a white clock"


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def xl():
    pipe = build_tiny_sdxl()
    pipe.set_progress_bar_config(disable=True)
    return TSAMPipeline(pipe)


def test_adapter_and_preset(xl):
    assert type(xl.adapter) is StableDiffusionXLAdapter and xl.adapter.default_preset == "sdxl"
    assert TSAMConfig.preset("sdxl").M == 1024


@pytest.mark.parametrize("kw", [
    dict(num_images_per_prompt=2, negative_prompt=["blurry", "dark"]),
    dict(guidance_rescale=0.7, original_size=(256, 256), crops_coords_top_left=(8, 0), target_size=(128, 128)),
    dict(guidance_scale=1.0, height=96, width=128),
])
def test_no_guidance_is_bitwise_diffusers(xl, kw):
    prompts = [PROMPT, "a cat with a hat"]
    want = xl.pipe(prompts, num_inference_steps=3, generator=gen(4), output_type="np", **kw).images
    got = xl(prompts, method=None, num_inference_steps=3, generator=gen(4), output_type="np", **kw).images
    assert np.array_equal(got, want)


def test_t_is_the_mean_of_both_encoders(xl):
    """text_attention='both': each encoder's maps averaged over its layers and heads, then over the two."""
    pipe = xl.pipe
    one = clip_text_attention(pipe.tokenizer, pipe.text_encoder, [PROMPT], xl.device)[0]
    two = clip_text_attention(pipe.tokenizer_2, pipe.text_encoder_2, [PROMPT], xl.device)[0]
    assert one.tokens == two.tokens and torch.equal(one.keep, two.keep)
    mean = (one.attentions.mean((0, 1)) + two.attentions.mean((0, 1))) / 2
    want = text_attention_matrix(mean[None, None], one.keep, gamma=4.0)
    for which, ref in [("both", want), ("first", text_attention_matrix(one.attentions, one.keep, gamma=4.0)),
                       ("second", text_attention_matrix(two.attentions, two.keep, gamma=4.0))]:
        text = xl.adapter.configured(text_attention=which).text_attention([PROMPT])[0]
        assert text.tokens == ["a", "black", "car", "and", "a", "white", "clock"]
        assert torch.allclose(text_attention_matrix(text.attentions, text.keep, gamma=4.0), ref, atol=1e-6)
    with pytest.raises(ValueError, match="text_attention must be one of both, first, second"):
        xl(PROMPT, text_attention="third")


def test_update_pass_gets_the_added_conditions_and_stops_after_the_32x32_layers(xl):
    """The update's conditional pass gets the same pooled embedding and time ids as the conditional half
    of the sampling pass; it reads the 32x32 layers (M = 1024) and never runs the 64x64 up block."""
    calls = []
    unet = xl.pipe.unet
    hook = unet.register_forward_pre_hook(
        lambda m, a, k: calls.append((torch.is_grad_enabled(), {n: v.clone() for n, v in k["added_cond_kwargs"].items()})),
        with_kwargs=True)
    last = []
    hook2 = unet.up_blocks[2].register_forward_pre_hook(lambda m, a: last.append(torch.is_grad_enabled()))
    try:
        out = xl(PROMPT, method=TSAMConfig.preset("sdxl", update_steps=(0,)), num_inference_steps=2, generator=gen(0),
                 output_type="latent", original_size=(300, 200))
    finally:
        hook.remove()
        hook2.remove()
    d = out.diagnostics
    assert d.map_size == (32, 32) and len(d.layers) == 3 and all(".attn2" in n for n in d.layers)
    upd = [kw for grad, kw in calls if grad][0]
    samp = [kw for grad, kw in calls if not grad][0]
    assert torch.equal(upd["text_embeds"], samp["text_embeds"][1:]) and torch.equal(upd["time_ids"], samp["time_ids"][1:])
    assert upd["time_ids"][0, :2].tolist() == [300, 200]
    assert True not in last  # the update pass exited before up_blocks[2]
    assert len(d.updates) == 1 and bool(d.updates[0].applied.all())


def test_guided_batches_equal_single_runs(xl):
    cfg = TSAMConfig.preset("sdxl", alpha=400.0)
    kw = dict(num_inference_steps=4, output_type="latent")
    plain = xl([PROMPT, "a cat with a hat"], method=None, generator=[gen(0), gen(1)], **kw).images
    both = xl([PROMPT, "a cat with a hat"], method=cfg, generator=[gen(0), gen(1)], **kw)
    one = xl("a cat with a hat", method=cfg, generator=gen(1), **kw)
    assert (both.images - plain).abs().amax() > 1e-3
    diff = (both.images[1:] - one.images).abs().amax()
    assert diff < 1e-5 * plain.abs().amax(), diff  # float sums differ with batch size and threads
    losses = torch.stack([u.loss for u in both.diagnostics.updates])
    assert torch.isfinite(losses).all()


def test_baselines_run_on_sdxl(xl):
    for method, tokens in [("attend-excite", "car,clock"), ("conform", "black car|white clock"), ("syngen", "black car|white clock")]:
        out = xl(PROMPT, method=method, tokens=tokens, num_inference_steps=2, generator=gen(0), output_type="latent")
        assert out.diagnostics.updates and out.diagnostics.map_size == (16, 16)  # their M=256: the 16x16 layers
