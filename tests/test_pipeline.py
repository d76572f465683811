"""TSAMPipeline on tiny SD pipelines built from configs (real CLIP tokenizer)."""
import warnings

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler
from diffusers.models.attention_processor import AttnProcessor2_0

from tsam_diffusion import ModelLoadError, TSAMConfig, TSAMPipeline
from tsam_diffusion.attention import _RecordingProcessor
from tsam_diffusion.guidance import TSAMGuidance
from tsam_diffusion.diagnostics import Diagnostics

def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


PROMPT = "a black car and a white clock"
STRONG = TSAMConfig(alpha=500.0, gamma=2.0, update_steps=(0, 1), reference_steps=4)


class PassCounter:
    """Counts denoiser passes: (batch size, grad enabled) per call."""

    def __init__(self, unet):
        self.calls = []
        self.handle = unet.register_forward_pre_hook(self)

    def __call__(self, module, args):
        self.calls.append((args[0].shape[0], torch.is_grad_enabled()))

    def remove(self):
        self.handle.remove()


def run(tsam_pipe, prompt=PROMPT, **kw):
    kw.setdefault("num_inference_steps", 4)
    kw.setdefault("generator", gen(0))
    kw.setdefault("output_type", "np")
    return tsam_pipe(prompt, **kw)


# ------------------------------------------------------------------ exact parity without guidance
@pytest.mark.parametrize("tsam", [None, TSAMConfig(alpha=0.0)])
def test_no_guidance_is_bitwise_diffusers(tiny_sd, tsam_pipe, tsam):
    kw = dict(num_inference_steps=5, num_images_per_prompt=2, negative_prompt=["blurry", "dark"], output_type="np")
    prompts = [PROMPT, "a cat with a hat"]
    want = tiny_sd(prompts, generator=gen(3), **kw).images
    got = tsam_pipe(prompts, tsam=tsam, generator=gen(3), **kw)
    assert np.array_equal(got.images, want)
    assert got.diagnostics.updates == []


def test_no_guidance_latents_bitwise(tiny_sd, tsam_pipe):
    want = tiny_sd(PROMPT, num_inference_steps=4, generator=gen(1), output_type="latent").images
    got = run(tsam_pipe, tsam=None, generator=gen(1), output_type="latent").images
    assert torch.equal(got, want)


# ------------------------------------------------------------------ guidance does something, the right way
def test_guidance_changes_image_and_records_diagnostics(tsam_pipe):
    base = run(tsam_pipe, tsam=None).images
    out = run(tsam_pipe, tsam=STRONG)
    assert not np.array_equal(out.images, base)
    d = out.diagnostics
    assert d.tokens == [["a", "black", "car", "and", "a", "white", "clock"]]
    assert d.T[0].shape == (7, 7) and torch.allclose(d.T[0].sum(-1), torch.ones(7))
    assert [(u.step, u.iteration) for u in d.updates] == [(0, 0), (1, 0)]
    assert d.losses.shape == (2, 1) and torch.isfinite(d.losses).all()
    assert d.map_size == (16, 16) and len(d.layers) == 4 and all(n.endswith("attn2") for n in d.layers)
    assert d.A_first.shape == (1, 256, 7) and d.S_of(0).shape == (7, 7)
    assert d.updates[0].step_size == pytest.approx(500.0)
    assert d.summary()["updates"] == 2 and d.skipped == []


def test_one_pass_per_update_for_the_whole_batch_no_graph_elsewhere(tsam_pipe):
    counter = PassCounter(tsam_pipe.pipe.unet)
    try:
        run(tsam_pipe, prompt=[PROMPT, "a cat with a hat"], num_images_per_prompt=2, tsam=STRONG)
    finally:
        counter.remove()
    updates = [c for c in counter.calls if c[1]]
    sampling = [c for c in counter.calls if not c[1]]
    assert updates == [(4, True)] * 2  # conditional branch only, all 4 images in one pass
    iterations = len(tsam_pipe.pipe.scheduler.timesteps)  # PNDM: 5 for 4 steps
    assert sampling == [(8, False)] * iterations  # CFG batch, no autograd graph


def test_refinement_lowers_the_loss(tsam_pipe):
    cfg = TSAMConfig(alpha=300.0, gamma=2.0, update_steps=(), refinement_steps=(0,), refinement_iterations=5,
                     reference_steps=4, step_size_schedule="constant")
    losses = run(tsam_pipe, tsam=cfg, output_type="latent").diagnostics.losses[:, 0]
    assert len(losses) == 5
    assert losses[-1] < losses[0] * 0.97
    assert all(b < a for a, b in zip(losses, losses[1:]))


def test_loss_threshold_stops_refinement(tsam_pipe):
    cfg = TSAMConfig(alpha=300.0, gamma=2.0, update_steps=(), refinement_steps=(0,), refinement_iterations=20,
                     reference_steps=4, loss_threshold=1e9)
    d = run(tsam_pipe, tsam=cfg, output_type="latent").diagnostics
    assert len(d.updates) == 1 and not d.updates[0].applied.any()


def test_batch_of_two_seeds_equals_two_single_runs(tsam_pipe):
    both = run(tsam_pipe, tsam=STRONG, num_images_per_prompt=2, generator=[gen(5), gen(6)], output_type="latent")
    for b, seed in enumerate((5, 6)):
        one = run(tsam_pipe, tsam=STRONG, generator=gen(seed), output_type="latent")
        torch.testing.assert_close(both.images[b : b + 1], one.images, rtol=1e-3, atol=1e-4)
        torch.testing.assert_close(both.diagnostics.losses[:, b], one.diagnostics.losses[:, 0], rtol=1e-4, atol=1e-6)


def test_prompts_of_different_lengths_in_one_batch(tsam_pipe):
    prompts = [PROMPT, "a dog"]
    both = run(tsam_pipe, prompt=prompts, tsam=STRONG, generator=[gen(1), gen(2)], output_type="latent")
    single = run(tsam_pipe, prompt="a dog", tsam=STRONG, generator=gen(2), output_type="latent")
    torch.testing.assert_close(both.images[1:], single.images, rtol=1e-3, atol=1e-4)
    assert both.diagnostics.tokens[1] == ["a", "dog"]


# ------------------------------------------------------------------ the update pass itself
def _guidance(tsam_pipe, config, early_exit=True):
    adapter = tsam_pipe.adapter
    d = Diagnostics([PROMPT], [], [], [0], None)
    g = TSAMGuidance(adapter, config, [PROMPT], [0], 128, 128, d)
    g.recorder.early_exit = early_exit
    cond = adapter.encode_prompt([PROMPT], None, 1, 7.5)
    tsam_pipe.pipe.scheduler.set_timesteps(4)
    t = tsam_pipe.pipe.scheduler.timesteps[0]
    z = torch.randn(1, 4, 32, 32, generator=gen(0))
    return g, cond, t, z


def test_gradient_reaches_the_latent_and_early_exit_is_exact(tsam_pipe):
    g, cond, t, z = _guidance(tsam_pipe, STRONG, early_exit=True)
    with g.recorder.install():
        new_early, rec = g.update(z, t, cond, 0, 0, 1.0)
        g.recorder.early_exit = False
        new_full, rec_full = g.update(z, t, cond, 0, 0, 1.0)
    assert not torch.equal(new_early, z)  # the gradient reached the latent
    assert torch.equal(new_early, new_full)  # stopping after the last layer read changes nothing
    assert torch.equal(rec.loss, rec_full.loss)


def test_processors_only_on_read_layers_and_restored(tsam_pipe):
    unet = tsam_pipe.pipe.unet
    before = dict(unet.attn_processors)
    g, *_ = _guidance(tsam_pipe, STRONG)
    with g.recorder.install():
        now = unet.attn_processors
        recording = {k.removesuffix(".processor") for k, p in now.items() if isinstance(p, _RecordingProcessor)}
        assert recording == set(g.recorder.modules)
        assert all(isinstance(p, AttnProcessor2_0) for k, p in now.items() if not isinstance(p, _RecordingProcessor))
    assert unet.attn_processors == before


def test_nonfinite_loss_skips_that_image_only(tsam_pipe, monkeypatch):
    import tsam_diffusion.methods.tsam as guidance  # where T-SAM's loss is called

    real = guidance.tsam_loss
    monkeypatch.setattr(guidance, "tsam_loss", lambda T, S, **kw: real(T, S, **kw) * torch.tensor([float("nan"), 1.0]))
    with pytest.warns(UserWarning, match="non-finite") as caught:
        out = run(tsam_pipe, tsam=STRONG, num_images_per_prompt=2, generator=[gen(5), gen(6)], output_type="latent")
    assert sum("non-finite" in str(w.message) for w in caught) == 1  # warned once
    d = out.diagnostics
    assert [(s.step, s.image, s.reason) for s in d.skipped] == [(0, 0, "loss is not finite"), (1, 0, "loss is not finite")]
    assert all(u.applied.tolist() == [False, True] for u in d.updates)
    assert torch.isfinite(out.images).all()
    monkeypatch.setattr(guidance, "tsam_loss", real)
    plain = run(tsam_pipe, tsam=None, generator=gen(5), output_type="latent").images
    torch.testing.assert_close(out.images[:1], plain, rtol=1e-3, atol=1e-4)  # image 0 was never moved


# ------------------------------------------------------------------ layers
def test_explicit_layers_and_nearest_resolution(tsam_pipe):
    name = "up_blocks.1.attentions.0.transformer_blocks.0.attn2"  # 32x32 at 128px
    d = run(tsam_pipe, tsam=STRONG.replace(layers=(name,)), output_type="latent").diagnostics
    assert d.layers == [name] and d.map_size == (32, 32)
    with pytest.warns(UserWarning, match="nearest"):
        d = run(tsam_pipe, tsam=STRONG.replace(M=81), output_type="latent").diagnostics
    assert d.map_size == (16, 16)
    with pytest.raises(ValueError, match="available"):
        run(tsam_pipe, tsam=STRONG.replace(layers=("mid_block.nope",)))


def test_map_size_follows_image_size(tsam_pipe):
    d = run(tsam_pipe, tsam=STRONG.replace(M=64), height=64, width=64, output_type="latent").diagnostics
    assert d.map_size == (8, 8)


# ------------------------------------------------------------------ models, schedulers, dtypes
@pytest.mark.parametrize("scheduler_cls", [DDIMScheduler, EulerDiscreteScheduler, DPMSolverMultistepScheduler, HeunDiscreteScheduler])
def test_schedulers(tiny_sd, scheduler_cls):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(**{**tiny_sd.components, "scheduler": scheduler_cls.from_config(tiny_sd.scheduler.config)})
    pipe.set_progress_bar_config(disable=True)
    tsam = TSAMPipeline(pipe)
    want = pipe(PROMPT, num_inference_steps=4, generator=gen(0), output_type="np").images
    assert np.array_equal(run(tsam, tsam=None).images, want)
    out = run(tsam, tsam=STRONG)
    assert [u.step for u in out.diagnostics.updates] == [0, 1]
    assert np.isfinite(out.images).all()


def test_sd2_style_v_prediction():
    from tsam_diffusion.tiny import build_tiny_sd

    pipe = build_tiny_sd(prediction_type="v_prediction", pad_token="!", seed=1)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.tokenizer.pad_token == "!"
    tsam = TSAMPipeline(pipe)
    want = pipe(PROMPT, num_inference_steps=4, generator=gen(0), output_type="np").images
    assert np.array_equal(run(tsam, tsam=None).images, want)
    out = run(tsam, tsam=STRONG)
    assert out.diagnostics.tokens[0] == ["a", "black", "car", "and", "a", "white", "clock"]
    assert not np.array_equal(out.images, want)


def test_bfloat16_model_keeps_float32_loss():
    from tsam_diffusion.tiny import build_tiny_sd

    pipe = build_tiny_sd(torch_dtype=torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)
    out = run(TSAMPipeline(pipe), tsam=STRONG, output_type="latent")
    assert out.images.dtype == torch.bfloat16
    assert out.diagnostics.losses.dtype == torch.float32 and torch.isfinite(out.diagnostics.losses).all()
    assert out.diagnostics.T[0].dtype == torch.float32


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("prompt", ["", "   ", [PROMPT, " "], [], None])
def test_empty_prompt(tsam_pipe, prompt):
    with pytest.raises(ValueError, match="prompt"):
        tsam_pipe(prompt)


def test_long_prompt_truncated_with_warning(tsam_pipe):
    long = " ".join(["red apple"] * 60)
    with pytest.warns(UserWarning, match="truncated"):
        d = run(tsam_pipe, prompt=long, tsam=STRONG, output_type="latent").diagnostics
    assert len(d.tokens[0]) == 75 and d.T[0].shape == (75, 75)
    assert any("truncated" in n for n in d.notes)


def test_one_content_token_is_a_noop(tsam_pipe):
    counter = PassCounter(tsam_pipe.pipe.unet)
    try:
        out = run(tsam_pipe, prompt="cat", tsam=STRONG, output_type="latent")
    finally:
        counter.remove()
    assert all(not grad for _, grad in counter.calls)  # no update pass at all
    assert out.diagnostics.updates == [] and "no-op" in " ".join(out.diagnostics.notes)
    assert torch.equal(out.images, run(tsam_pipe, prompt="cat", tsam=None, output_type="latent").images)


def test_unsupported_pipeline():
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    pipe = DDPMPipeline(UNet2DModel(sample_size=8, block_out_channels=(8, 8), norm_num_groups=4,
                                    down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2), DDPMScheduler())
    with pytest.raises(TypeError, match="StableDiffusionPipeline"):
        TSAMPipeline(pipe)


@pytest.mark.parametrize("kw,match", [(dict(num_inference_steps=0), "num_inference_steps"),
                                      (dict(num_images_per_prompt=0), "num_images_per_prompt"),
                                      (dict(height=100), "multiples of 8"),
                                      (dict(tsam="nope"), "unknown method 'nope'; choose one of: tsam, tsam:flux, tsam:mini"),
                                      (dict(tsam=3), "guidance config, a method name or None"),
                                      (dict(method="tsam:nope"), "unknown tsam preset 'nope'"),
                                      (dict(method="attend-excite", tokens=3), "tokens must be")])
def test_bad_call_arguments(tsam_pipe, kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        tsam_pipe(PROMPT, **kw)


# ------------------------------------------------------------------ loading
def test_from_pretrained_local_folder(tiny_sd, tmp_path):
    tiny_sd.save_pretrained(tmp_path / "tiny")
    loaded = TSAMPipeline.from_pretrained(str(tmp_path / "tiny"))
    loaded.set_progress_bar_config(disable=True)
    a = run(loaded, tsam=STRONG, output_type="latent").images
    b = run(TSAMPipeline(tiny_sd), tsam=STRONG, output_type="latent").images
    assert torch.equal(a, b)


def test_from_pretrained_builtin():
    pipe = TSAMPipeline.from_pretrained("tiny-sd")
    assert pipe.pipe.tokenizer.model_max_length == 77


def test_missing_weights_give_one_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        TSAMPipeline.from_pretrained(str(tmp_path / "missing"))
    with pytest.raises(ModelLoadError, match="weights are needed") as e:
        TSAMPipeline.from_pretrained("stable-diffusion-v1-5/stable-diffusion-v1-5")  # HF_HUB_OFFLINE=1 in tests
    assert "--model DIR" in str(e.value)


def test_checkpointing_gives_the_same_update(tsam_pipe):
    plain = run(tsam_pipe, tsam=STRONG, output_type="latent")
    ckpt = run(tsam_pipe, tsam=STRONG.replace(checkpointing=True), output_type="latent")
    torch.testing.assert_close(ckpt.images, plain.images, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ckpt.diagnostics.losses, plain.diagnostics.losses)
    assert not tsam_pipe.pipe.unet.is_gradient_checkpointing  # restored


def test_checkpointing_gradient_equals_full_pass(tsam_pipe):
    g, cond, t, z = _guidance(tsam_pipe, STRONG, early_exit=True)
    unet = tsam_pipe.pipe.unet
    with g.recorder.install():
        want, _ = g.update(z, t, cond, 0, 0, 1.0)
        unet.enable_gradient_checkpointing()
        try:
            got, _ = g.update(z, t, cond, 0, 0, 1.0)
        finally:
            unet.disable_gradient_checkpointing()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_float16_gradient_is_scaled_and_backs_off_on_overflow():
    from tsam_diffusion.tiny import build_tiny_sd

    pipe32 = build_tiny_sd()
    pipe16 = build_tiny_sd(torch_dtype=torch.float16)
    grads = {}
    for name, pipe in (("32", pipe32), ("16", pipe16)):
        g, cond, t, z = _guidance(TSAMPipeline(pipe), STRONG)
        z = z.to(pipe.unet.dtype)
        if name == "16":
            g.grad_scale = 2.0**60  # overflows float16: must back off and still give a finite gradient
        with g.recorder.install():
            new, rec = g.update(z, t, cond, 0, 0, 1000.0)  # a step well above float16's rounding of the latent
        grads[name] = (z.float() - new.float()).flatten()
        assert rec.finite.all()
    assert g.grad_scale < 2.0**60
    cos = torch.nn.functional.cosine_similarity(grads["32"], grads["16"], dim=0)
    assert cos > 0.95 and grads["16"].abs().max() > 0


def test_no_parameter_gradients_and_no_capture_outside_updates(tsam_pipe):
    unet = tsam_pipe.pipe.unet
    seen = []
    hook = unet.register_forward_pre_hook(lambda m, a: seen.append(any(p.requires_grad for p in unet.parameters())))
    maps_per_update = []
    real_mean = __import__("tsam_diffusion.attention", fromlist=["x"]).CrossAttentionRecorder.mean

    def spy(self):
        maps_per_update.append(len(self.maps))
        return real_mean(self)

    from tsam_diffusion.attention import CrossAttentionRecorder

    CrossAttentionRecorder.mean = spy
    try:
        out = run(tsam_pipe, tsam=STRONG, output_type="latent")
    finally:
        CrossAttentionRecorder.mean = real_mean
        hook.remove()
    assert seen and not any(seen)  # parameters never require grad while sampling
    assert maps_per_update == [len(out.diagnostics.layers)] * 2  # each update records each layer once, nothing else
