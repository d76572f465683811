"""Checks that need a CUDA GPU, in one short script (the test suite covers everything else on CPU).

    python benchmarks/gpu_check.py --json gpu_check.json

1. tiny-sd on CUDA in float32, float16 and bfloat16: ``tsam=None`` against diffusers' own pipeline
   (bitwise or not, and the largest difference), T-SAM runs with finite float32 losses, the
   latent stays on the GPU during sampling.
2. SD 1.5's layout at full width (random weights) in float16 at 512px: one update with early exit
   against the full pass (same gradient step), and the update's loss dtype.
3. tiny-sd3 and tiny-flux (joint attention) on CUDA in float32 and bfloat16: ``tsam=None`` against
   diffusers' own pipeline, T-SAM with finite float32 losses, the recorded A's rows summing to 1 over
   the text keys.
Prints one line per check and a summary; exits 1 if a check fails. The speed of the SD3 and Flux
layouts at full width is ``speed.py``'s (``--layout sd3|flux-dev --device cuda --dtype bfloat16``).

    python benchmarks/gpu_check.py --dry-run --device cpu    # CPU rehearsal of every check (small widths)
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from tsam_diffusion import TSAMConfig, TSAMPipeline
from tsam_diffusion.diagnostics import Diagnostics
from tsam_diffusion.guidance import Guidance
from tsam_diffusion.tiny import build_tiny_sd

PROMPT = "a black car and a white clock"
results: list[dict] = []


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def check(name: str, ok: bool, **info) -> None:
    results.append({"check": name, "ok": bool(ok), **info})
    print(f"[{'ok' if ok else 'FAIL'}] {name} {info}", flush=True)


def parity_check(name: str, build, device: str, dtype: torch.dtype, steps: int):
    """A tiny pipeline on ``device``: ``method=None`` against diffusers' own call (bitwise in float32).
    Returns the pipeline, its ``TSAMPipeline`` and the seed-0 generator factory for further checks."""
    pipe = build(torch_dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    tsam = TSAMPipeline(pipe)
    gen = lambda: torch.Generator("cpu").manual_seed(0)  # noqa: E731
    want = pipe(PROMPT, num_inference_steps=steps, generator=gen(), output_type="np").images
    got = tsam(PROMPT, method=None, num_inference_steps=steps, generator=gen(), output_type="np").images
    diff = float(np.abs(got.astype(np.float64) - want).max())
    check(f"{name} {dtype} tsam=None equals diffusers", diff <= (0 if dtype == torch.float32 else 1e-2),
          bitwise=bool(np.array_equal(got, want)), max_abs_diff=diff)
    return pipe, tsam, gen


def tiny_checks(device: str) -> None:
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        pipe, tsam, gen = parity_check("tiny-sd", build_tiny_sd, device, dtype, 10)
        devices = set()
        hook = pipe.unet.register_forward_pre_hook(lambda m, a: devices.add(str(a[0].device)))
        out = tsam(PROMPT, tsam=TSAMConfig(alpha=500.0, gamma=2.0, update_steps=(0, 1, 2), reference_steps=10),
                   num_inference_steps=10, generator=gen(), output_type="latent")
        hook.remove()
        losses = out.diagnostics.losses
        check(f"tiny-sd {dtype} T-SAM", bool(torch.isfinite(losses).all()) and losses.dtype == torch.float32
              and bool(torch.isfinite(out.images.float()).all()) and all(x.startswith(torch.device(device).type) for x in devices),
              losses=[round(x, 5) for x in losses[:, 0].tolist()], latent_dtype=str(out.images.dtype), devices=sorted(devices))


def sd15_update(device: str, dtype: torch.dtype, step_size: float, width_scale: int = 1):
    """One T-SAM update (preset sd-tifa's settings) of two latents with SD 1.5's full-width layout, with
    early exit on, off and on again (the first warms up kernels), and the raw latent gradient."""
    sys.path.insert(0, "benchmarks")
    from speed_layouts import build_sd15

    pipe = build_sd15(width_scale, device, dtype)
    adapter = TSAMPipeline(pipe).adapter
    d = Diagnostics([PROMPT], [], [], [0, 0], None)
    g = Guidance(adapter, TSAMConfig.preset("sd-tifa"), [PROMPT], [0, 0], 512, 512, d)
    cond = adapter.encode_prompt([PROMPT], None, 2, 7.5)
    pipe.scheduler.set_timesteps(50)
    t = pipe.scheduler.timesteps[0]
    z = torch.randn(2, 4, 64, 64, generator=torch.Generator("cpu").manual_seed(0)).to(device, dtype)
    out = {}
    with g.recorder.install():
        for early_exit in (True, False, True):
            g.recorder.early_exit = early_exit
            sync()
            t0 = time.perf_counter()
            new, rec = g.update(z, t, cond, 0, 0, step_size)
            sync()
            out[early_exit] = (new, rec, time.perf_counter() - t0)
        with torch.enable_grad(), g.recorder.capture():  # the raw latent gradient, before any rounding
            zg = z.detach().requires_grad_(True)
            g.recorder.run(lambda: adapter.forward_cond(zg, t, cond))
            loss, _ = g.objective.loss(g.recorder.mean(), g.map_size)
            out["grad"] = g._latent_gradient(loss, zg).float()
    del pipe
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return z, out, d


def joint_checks(device: str, dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16)) -> None:
    """tiny-sd3 and tiny-flux: parity without guidance, T-SAM's losses, A's rows over the text keys."""
    from tsam_diffusion.attention import CrossAttentionRecorder
    from tsam_diffusion.tiny import build_tiny_flux, build_tiny_sd3

    for name, build in (("tiny-sd3", build_tiny_sd3), ("tiny-flux", build_tiny_flux)):
        for dtype in dtypes:
            pipe, tsam, gen = parity_check(name, build, device, dtype, 6)
            out = tsam(PROMPT, num_inference_steps=6, generator=gen(), output_type="latent")
            losses = torch.stack([u.loss for u in out.diagnostics.updates])
            adapter = tsam.adapter
            cond = adapter.encode_prompt([PROMPT], None, 1, 1.0, (64, 64))
            layers = adapter.cross_attention_layers(64, 64)[:1]
            recorder = CrossAttentionRecorder.of(layers)
            with torch.no_grad(), recorder.install(), recorder.capture():
                recorder.run(lambda: adapter.forward_cond(out.images, adapter.timesteps(6, 64, 64)[0][0], cond))
            rows = recorder.maps[0].sum(-1)
            check(f"{name} {dtype} T-SAM", bool(torch.isfinite(losses).all()) and losses.dtype == torch.float32
                  and bool(torch.isfinite(out.images.float()).all()) and bool(torch.allclose(rows, torch.ones_like(rows), atol=1e-4)),
                  losses=[round(x, 5) for x in losses[:, 0].tolist()], rows_max_dev=float((rows - 1).abs().max()))
            del pipe, tsam


def sd15_check(device: str, width_scale: int = 1, half: torch.dtype = torch.float16) -> None:
    step = 1e4  # large enough that a float16 latent shows the step despite its rounding
    z16, out16, d = sd15_update(device, half, step, width_scale)
    z32, out32, _ = sd15_update(device, torch.float32, step, width_scale)
    (e16, rec16, t_e16), (f16, _, t_f16) = out16[True], out16[False]
    (e32, rec32, t_e32), (f32, _, _) = out32[True], out32[False]
    check("SD1.5 fp16 early exit equals full pass", torch.equal(e16, f16), layers=d.layers, map_size=d.map_size,
          update_ms_early=round(t_e16 * 1000, 1), update_ms_full=round(t_f16 * 1000, 1))
    s32, s16 = (z32 - e32).flatten(), (z32 - f32).flatten()
    diff = (s32 - s16).abs().max().item()
    check("SD1.5 fp32 early exit equals full pass (up to GPU nondeterminism)", diff <= 1e-3 * s32.abs().max().item(),
          max_step_diff=diff, max_step=s32.abs().max().item(), update_ms_early=round(t_e32 * 1000, 1))
    g16, g32 = out16["grad"].flatten(), out32["grad"].flatten()
    cos = torch.nn.functional.cosine_similarity(g16, g32, dim=0).item()
    check("SD1.5 fp16 latent gradient follows the fp32 one", cos > 0.9, cosine=round(cos, 4),
          grad16_max=g16.abs().max().item(), grad32_max=g32.abs().max().item(),
          loss16=rec16.loss.tolist(), loss32=rec32.loss.tolist(), loss_dtype=str(rec16.loss.dtype))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda")
    p.add_argument("--json", default=None)
    p.add_argument("--skip-sd15", action="store_true", help="no SD 1.5 layout check (the tiny pipelines only)")
    p.add_argument("--dry-run", action="store_true", help="CPU rehearsal: SD 1.5 layout at width / 10, bfloat16")
    args = p.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"device: {name}, torch {torch.__version__}", flush=True)
    tiny_checks(args.device)
    joint_checks(args.device)
    if args.dry_run:
        sd15_check(args.device, width_scale=10, half=torch.bfloat16)
    elif not args.skip_sd15:
        sd15_check(args.device)
    failed = [r["check"] for r in results if not r["ok"]]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "results": results}, f, indent=2, default=str)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
