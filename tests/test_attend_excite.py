"""Attend-and-Excite as a method of the sampler: its loss, its refinement rule, and the whole run
against diffusers' own ``StableDiffusionAttendAndExcitePipeline`` on tiny-sd."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from tsam_diffusion import TSAMPipeline
from tsam_diffusion.functional import gaussian_kernel
from tsam_diffusion.methods import AttendExciteConfig, TSAMConfig, from_name
from tsam_diffusion.methods.attend_excite import attend_excite_loss

PROMPT = "a black car and a white clock"  # CLIP positions: car 3, clock 7


def _diffusers_ae():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from diffusers.pipelines.deprecated.stable_diffusion_attend_and_excite.pipeline_stable_diffusion_attend_and_excite import (
            StableDiffusionAttendAndExcitePipeline)
    return StableDiffusionAttendAndExcitePipeline


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ the loss
def test_loss_equals_diffusers_own_computation():
    """Against diffusers' ``_compute_max_attention_per_index`` and ``_compute_loss`` (one image at a time)."""
    Pipe = _diffusers_ae()
    g = gen(0)
    A = torch.rand(3, 64, 77, generator=g).softmax(-1)  # [B, 8x8, 77]
    subjects = torch.tensor([[3, 7], [2, 5], [4, 4]])
    subject_mask = torch.tensor([[True, True], [True, True], [True, False]])
    text_mask = torch.zeros(3, 77, dtype=torch.bool)
    text_mask[:, 1:76] = True
    loss, peaks = attend_excite_loss(A, subjects, subject_mask, text_mask, 8, 8)
    for b in range(3):
        idx = subjects[b][subject_mask[b]].tolist()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.meshgrid's indexing notice, from diffusers' GaussianSmoothing
            want = Pipe._compute_max_attention_per_index(A[b].reshape(8, 8, 77).clone(), idx)
        torch.testing.assert_close(peaks[b][subject_mask[b]], torch.stack(want), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(loss[b], torch.as_tensor(Pipe._compute_loss(want), dtype=torch.float32), rtol=1e-6, atol=1e-7)


def test_loss_by_hand():
    """A map that puts all its text mass on the subject at one pixel: softmax(100 * 1) ~ 1 there."""
    A = torch.zeros(1, 9, 5)
    A[0, :, 0] = 1.0  # BOS everywhere: left out of the softmax
    A[0, 4, 0], A[0, 4, 2] = 0.0, 1.0  # the centre pixel attends to token 2 only
    text_mask = torch.tensor([[False, True, True, True, False]])
    loss, peaks = attend_excite_loss(A, torch.tensor([[2]]), torch.tensor([[True]]), text_mask, 3, 3, sigma=0.0)
    # centre: softmax over (0, 100, 0) -> token 2 gets 1 / (1 + 2 e^-100); elsewhere 1/3
    assert peaks.item() == pytest.approx(1.0, abs=1e-6) and loss.item() == pytest.approx(0.0, abs=1e-6)
    loss, peaks = attend_excite_loss(A, torch.tensor([[2]]), torch.tensor([[True]]), text_mask, 3, 3)  # smoothed
    k = gaussian_kernel(3, 0.5)
    want = k[1, 1] * 1.0 + (1 - k[1, 1]) / 3  # centre of the smoothed map (every neighbour is 1/3)
    assert peaks.item() == pytest.approx(float(want), rel=1e-5) and loss.item() == pytest.approx(1 - float(want), rel=1e-5)


# ------------------------------------------------------------------ the refinement rule
def _ae_reference(losses: list[float], target: float, max_iter: int) -> int:
    """How many updates diffusers' A&E makes at a refinement step when the loss at the latent after
    ``k`` updates is ``losses[k]``: the loops of ``__call__`` and ``_perform_iterative_refinement_step``."""
    k, loss = 0, losses[0]
    if loss > target:
        iteration = 0
        while loss > target:
            iteration += 1
            loss, k = losses[k], k + 1  # the loss at the current latent, then the update
            if iteration >= max_iter:
                break
    return k + 1  # and the regular update (after the final pass)


@pytest.mark.parametrize("losses", [
    [0.9] + [0.1] * 30,  # below the target at once: the regular update only
    [0.99, 0.8] + [0.1] * 30,  # one refinement iteration suffices: three updates in all
    [0.99, 0.98, 0.97, 0.7, 0.6] + [0.5] * 30,
    [0.99] * 40,  # never reaches it: 20 iterations and the regular update
])
def test_updates_left_follows_attend_and_excites_loop(losses):
    cfg = AttendExciteConfig(reference_steps=50)
    target = 1 - cfg.thresholds[0]
    left, j = torch.tensor([cfg.schedule(50)[0]]), 0
    while left.item() > 0:
        left = cfg.updates_left(0, j, torch.tensor([losses[j]]), left, 50)
        j += 1
    assert j == _ae_reference(losses, target, cfg.refinement_iterations)


def test_schedule_and_names():
    cfg = from_name("attend-excite", "mini")
    assert cfg == AttendExciteConfig() and cfg.name == "ae" and cfg.needs_tokens
    plan = cfg.schedule(50)
    assert plan[0] == plan[10] == plan[20] == 21 and plan[1] == plan[24] == 1 and plan[25] == 0
    assert from_name("tsam", "mini") == TSAMConfig.preset("mini") and not TSAMConfig().needs_tokens
    with pytest.raises(ValueError, match="thresholds must have one value per refinement step"):
        AttendExciteConfig(refinement_steps=(0, 10))
    with pytest.raises(ValueError, match="unknown method 'excite'"):
        from_name("excite", "mini")


# ------------------------------------------------------------------ the whole run against diffusers
def test_images_equal_diffusers_attend_and_excite(tiny_sd):
    """Same seed, prompt, token indices and settings (refinement at 0, 2, 4 of 8 steps; updates 0..4)."""
    steps = 8
    ae = _diffusers_ae()(**{k: v for k, v in tiny_sd.components.items() if k != "image_encoder"}, requires_safety_checker=False)
    ae.set_progress_bar_config(disable=True)
    processors = tiny_sd.unet.attn_processors
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = ae(PROMPT, token_indices=[3, 7], num_inference_steps=steps, max_iter_to_alter=5,
                  thresholds={0: 0.05, 2: 0.5, 4: 0.8}, attn_res=(16, 16), generator=gen(0), output_type="np").images
    tiny_sd.unet.set_attn_processor(processors)  # the UNet is shared with other tests
    cfg = AttendExciteConfig(reference_steps=steps, update_steps=tuple(range(5)), refinement_steps=(0, 2, 4))
    out = TSAMPipeline(tiny_sd)(PROMPT, method=cfg, tokens="car,clock", num_inference_steps=steps, generator=gen(0),
                                output_type="np")
    base = TSAMPipeline(tiny_sd)(PROMPT, method=None, num_inference_steps=steps, generator=gen(0), output_type="np")
    assert np.abs(want - base.images).max() > 1e-3  # A&E changed the image ...
    np.testing.assert_allclose(out.images, want, atol=1e-5)  # ... exactly as diffusers' A&E does
    d = out.diagnostics
    assert d.notes[-1] == "attend-excite subjects: car clock"
    steps_updated = sorted({u.step for u in d.updates})
    assert steps_updated == [0, 1, 2, 3, 4] and len([u for u in d.updates if u.step == 2]) >= 1
    assert all(u.S.shape == (1, 2) for u in d.updates)  # the subjects' maxima


def test_batch_equals_single_runs_and_groups_per_prompt(tsam_pipe):
    cfg = AttendExciteConfig(reference_steps=4, update_steps=(0, 1), refinement_steps=(0,), refinement_iterations=3,
                             thresholds=(0.9,))
    prompts = [PROMPT, "a cat with a hat"]
    kw = dict(num_inference_steps=4, output_type="latent")
    both = tsam_pipe(prompts, method=cfg, tokens=["car,clock", [["cat"], ["hat"]]], generator=[gen(1), gen(2)], **kw)
    for b, (prompt, tokens) in enumerate(zip(prompts, ["car,clock", "cat,hat"])):
        one = tsam_pipe(prompt, method=cfg, tokens=tokens, generator=gen(b + 1), **kw)
        torch.testing.assert_close(both.images[b: b + 1], one.images, rtol=1e-3, atol=1e-4)


def test_on_tsam_mini(mini_pipe):
    """BERT word pieces, [CLS]/[SEP] in the key sequence: the colour-shape words are found and excited."""
    out = mini_pipe("a red circle and a blue square", method="attend-excite", tokens="red circle|blue square",
                    generator=gen(0), output_type="latent")
    d = out.diagnostics
    assert d.notes[-1] == "attend-excite subjects: circle square"
    assert d.updates and torch.isfinite(d.losses).all()


def test_bad_inputs(tsam_pipe):
    with pytest.raises(ValueError, match="attend-excite needs the prompt's object words"):
        tsam_pipe(PROMPT, method="attend-excite", num_inference_steps=2)
    with pytest.raises(ValueError, match="the word 'dog' is not in the prompt"):
        tsam_pipe(PROMPT, method="attend-excite", tokens="car,dog", num_inference_steps=2)
    with pytest.raises(ValueError, match="tokens has 1 entries for 2 prompts"):
        tsam_pipe([PROMPT, PROMPT], method="attend-excite", tokens=["car,clock"], num_inference_steps=2)
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        tsam_pipe(PROMPT, method="nope", num_inference_steps=2)
    with pytest.raises(TypeError, match="not both"):
        tsam_pipe(PROMPT, method="attend-excite", tsam="sd-ae", num_inference_steps=2)
