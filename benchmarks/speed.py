"""Speed of T-SAM against plain sampling, with a real model's exact block layout (SD 1.5, PixArt-alpha, SDXL, SD3, FLUX.1-dev).

Builds, from configs with random weights, the layout named by ``--layout`` (``speed_layouts.py``:
SD 1.5 by default; channels divided by ``--width-scale``) and times, from one run, at the same
prompt and seed:

- ``reference``: diffusers' own pipeline (``StableDiffusionPipeline``, ``PixArtAlphaPipeline``, ...);
- ``none``: ``TSAMPipeline`` with ``tsam=None``;
- T-SAM presets by name (``sd-tifa``, ``sd-ae``, ``pixart``, ``sdxl``, ``sd3``, ``flux``), and ``NAME+ckpt`` (gradient checkpointing);
- with ``--methods``, the baselines ``attend-excite``, ``syngen`` and ``conform`` (objects "car", "clock";
  groups "black car|white clock"), and on SD 1.5 ``diffusers-ae``: diffusers' own
  ``StableDiffusionAttendAndExcitePipeline`` with the same settings, for the ratio to ``attend-excite``.

For each: the median wall time over ``--reps``, the ratio to the reference, denoiser passes by kind,
peak memory, and the analytic floor (plain sampling + per update one forward up to the last layer
read and one latent-only backward of that part, timed separately with diffusers' own SDPA
processors). Also the time of ``similarity_matrix`` + ``tsam_loss`` forward and backward.

    python benchmarks/speed.py                                  # CPU: --width-scale 10
    python benchmarks/speed.py --device cuda --dtype float16    # GPU: full width
    python benchmarks/speed.py --methods reference,attend-excite,diffusers-ae,syngen,conform   # the baselines
    python benchmarks/speed.py --layout pixart-alpha            # PixArt-XL-2-512x512's layout
    python benchmarks/speed.py --layout sdxl --width-scale 8    # SDXL's, 1024px
    python benchmarks/speed.py --layout sd3 --size 512          # SD3-medium's (joint attention), 28 steps
    python benchmarks/speed.py --layout flux-dev --size 512     # FLUX.1-dev's, 28 steps

A script that prints figures (and ``--json`` writes them); it asserts nothing about time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import threading
import time
from typing import Any, Callable

import torch

from speed_layouts import LAYOUTS
from tsam_diffusion import TSAMConfig, TSAMPipeline
from tsam_diffusion.functional import similarity_matrix, text_attention_matrix, tsam_loss
from tsam_diffusion.guidance import select_layers

PROMPT = "a black car and a white clock"
BASELINES = {"attend-excite": "car,clock", "syngen": "black car|white clock", "conform": "black car|white clock"}
AE_INDICES = [3, 7]  # "car", "clock" in CLIP's tokens of PROMPT (BOS at 0)


def diffusers_ae(pipe):
    """diffusers' own Attend-and-Excite pipeline (deprecated, kept in diffusers) on the same components."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from diffusers.pipelines.deprecated.stable_diffusion_attend_and_excite.pipeline_stable_diffusion_attend_and_excite import (
            StableDiffusionAttendAndExcitePipeline)
        ae = StableDiffusionAttendAndExcitePipeline(**{k: v for k, v in pipe.components.items() if k != "image_encoder"},
                                                    requires_safety_checker=False)
    ae.set_progress_bar_config(disable=True)
    return ae


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class PeakMemory:
    """Peak memory during a block: CUDA allocated bytes, or process RSS polled every 5 ms on CPU."""

    def __init__(self, device: str) -> None:
        self.device, self.peak, self.base = device, 0, 0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> "PeakMemory":
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = self.peak = self._rss()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc: Any) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._rss())


def timed(fn: Callable[[], Any], reps: int, device: str, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


class PassCounter:
    """Counts denoiser passes: sampling (no grad) and update (grad) passes."""

    def __init__(self, unet) -> None:
        self.sampling = self.update = 0
        self.handle = unet.register_forward_pre_hook(self._hook)

    def _hook(self, module, args) -> None:
        if torch.is_grad_enabled():
            self.update += 1
        else:
            self.sampling += 1


class _Stop(Exception):
    pass


def floor_seconds(reference_s: float, update_passes: int, partial_fwd_bwd_s: float) -> float:
    """The analytic floor of a guided run: plain sampling (``reference_s``) plus, per update pass, one
    forward up to the last layer read and a backward to the latent (``partial_fwd_bwd_s``)."""
    return reference_s + update_passes * partial_fwd_bwd_s


def forward_backward_to_last_read(forward: Callable[[torch.Tensor], Any], read: list[torch.nn.Module], z: torch.Tensor) -> None:
    """An update's floor: ``forward(x)`` until every module in ``read`` has run, then a backward of
    their outputs to the latent ``x`` only (no parameter gradients)."""
    outputs = []

    def stop(module, args, output):
        outputs.extend(output if isinstance(output, tuple) else [output])  # joint attention: image and text outputs
        stop.calls += 1
        if stop.calls == len(read):
            raise _Stop

    stop.calls = 0

    handles = [m.register_forward_hook(stop) for m in read]
    x = z.clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            forward(x)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    with torch.enable_grad():
        torch.autograd.grad(sum(o.float().square().mean() for o in outputs), x)


def floor_pieces(tsam: TSAMPipeline, device: str, reps: int, size: int, call: dict[str, Any], steps: int = 50) -> dict[str, float]:
    """Times of the pieces of the analytic floor, with diffusers' own (SDPA) processors: the adapter only
    builds the denoiser's inputs (prompt embeddings, added conditions) as the pipeline does."""
    adapter = tsam.adapter.configured(**call)
    denoiser = adapter.denoiser
    scale = adapter.default_guidance_scale
    cfg_cond = adapter.encode_prompt([PROMPT], None, 1, scale, (size, size))  # a sampling pass (both branches with CFG)
    cond = adapter.encode_prompt([PROMPT], None, 1, 1.0, (size, size))  # the conditional branch: an update pass
    z = adapter.prepare_latents(1, size, size, torch.Generator("cpu").manual_seed(0), None)
    t = adapter.timesteps(steps, size, size)[0][0]  # the first step: where updates happen (981 for SD 1.5's PNDM)
    denoiser.requires_grad_(False)
    preset = TSAMConfig.preset(adapter.default_preset)
    read = [layer.module for layer in select_layers(adapter.cross_attention_layers(size, size), preset, adapter.default_layers)]

    def full_forward() -> None:
        with torch.no_grad():
            adapter.predict(z, t, cfg_cond, scale)

    def partial_fb() -> None:
        forward_backward_to_last_read(lambda x: adapter.forward_cond(x, t, cond), read, z)

    def full_fb() -> None:
        x = z.clone().requires_grad_(True)
        with torch.enable_grad():
            y = adapter.predict(x, t, cond, 1.0)
            torch.autograd.grad(y.float().square().mean(), x)

    med = lambda f: statistics.median(timed(f, reps, device))  # noqa: E731
    return {"full_forward_b2": med(full_forward), "partial_fwd_bwd_b1": med(partial_fb), "full_fwd_bwd_b1": med(full_fb)}


def loss_timing(device: str, reps: int = 50) -> dict[str, float]:
    """``similarity_matrix`` + ``tsam_loss`` forward and backward, 75 tokens, in ms."""
    out = {}
    g = torch.Generator().manual_seed(0)
    attn = torch.rand(1, 1, 77, 77, generator=g).tril().to(device)
    T = text_attention_matrix(attn, torch.arange(1, 76, device=device), gamma=2.0)
    for side in (16, 64):
        A = torch.rand(1, side * side, 75, generator=g).softmax(-1).to(device).requires_grad_(True)

        def step() -> None:
            loss = tsam_loss(T, similarity_matrix(A, side, side))
            torch.autograd.grad(loss.sum(), A)

        out[f"{side}x{side}"] = statistics.median(timed(step, reps, device, warmup=3)) * 1000
    return out


def update_cost(tsam: TSAMPipeline, device: str, size: int, n: int = 20, profile: bool = False,
                extra: dict[str, Any] | None = None) -> dict[str, float]:
    """Wall time of one T-SAM update at batch 1, isolated: (one step with n refinement updates - one
    step with none) / n; optionally a torch.profiler table of those n updates."""
    cfg = TSAMConfig.preset(tsam.adapter.default_preset, update_steps=(), refinement_steps=(0,), refinement_iterations=n)
    call = dict(num_inference_steps=2, height=size, width=size, output_type="latent", **(extra or {}))
    gen = lambda: torch.Generator("cpu").manual_seed(0)  # noqa: E731
    with_updates = lambda: tsam(PROMPT, tsam=cfg, generator=gen(), **call)  # noqa: E731
    without = lambda: tsam(PROMPT, tsam=None, generator=gen(), **call)  # noqa: E731
    t_with = statistics.median(timed(with_updates, 3, device))
    t_without = statistics.median(timed(without, 3, device))
    if profile:
        from torch.profiler import ProfilerActivity, profile as torch_profile

        cuda = device.startswith("cuda")
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with torch_profile(activities=acts) as prof:
            with_updates()
            sync(device)
        key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
        print(f"\nprofile of one step with {n} updates (sorted by {key}):")
        print(prof.key_averages().table(sort_by=key, row_limit=25))
    return {"per_update_ms": (t_with - t_without) / n * 1000, "updates": n}


def machine(device: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    desc = f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    if device.startswith("cuda"):
        desc = f"{torch.cuda.get_device_name()} ({desc})"
    return desc


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--width-scale", type=int, default=None, help="divide UNet/VAE channels (default 10 on CPU, 1 on GPU)")
    p.add_argument("--layout", default="sd15", choices=sorted(LAYOUTS), help="the model layout (default: sd15)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the layout's: 50, SD3 and Flux 28)")
    p.add_argument("--size", type=int, default=None, help="image size (default: the layout's: 512, SDXL 1024)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--methods", default=None, help="comma-separated (default: the layout's reference, none, preset, preset+ckpt)")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    p.add_argument("--profile", action="store_true", help="print a torch.profiler table of 20 isolated updates")
    args = p.parse_args(argv)
    device, dtype = args.device, getattr(torch, args.dtype)
    ws = args.width_scale or (1 if device.startswith("cuda") else 10)

    layout = LAYOUTS[args.layout]
    args.size = args.size or layout["size"]
    methods = (args.methods or layout["methods"]).split(",")
    if "diffusers-ae" in methods and args.layout != "sd15":
        p.error("diffusers-ae is diffusers' Stable Diffusion pipeline: use it with --layout sd15")
    pipe = layout["build"](ws, device, dtype)
    tsam = TSAMPipeline(pipe)
    args.steps = args.steps or tsam.adapter.default_steps  # the family's own: 50, SD3 and Flux 28
    gen = lambda: torch.Generator("cpu").manual_seed(0)  # noqa: E731

    def runs_for(steps: int) -> dict[str, Callable[[], Any]]:
        call = dict(num_inference_steps=steps, height=args.size, width=args.size, output_type="pil", **layout["call"])
        runs: dict[str, Callable[[], Any]] = {
            "reference": lambda: pipe(PROMPT, generator=gen(), **call),
            "none": lambda: tsam(PROMPT, tsam=None, generator=gen(), **call),
        }
        for name in TSAMConfig.presets:
            runs[name] = lambda name=name: tsam(PROMPT, tsam=TSAMConfig.preset(name), generator=gen(), **call)
            runs[name + "+ckpt"] = lambda name=name: tsam(PROMPT, tsam=TSAMConfig.preset(name, checkpointing=True), generator=gen(), **call)
        for name, tokens in BASELINES.items():
            runs[name] = lambda name=name, tokens=tokens: tsam(PROMPT, method=name, tokens=tokens, generator=gen(), **call)
        runs["diffusers-ae"] = lambda: diffusers_ae(pipe)(PROMPT, token_indices=AE_INDICES, generator=gen(), **call)
        return runs

    runs, warmups = runs_for(args.steps), runs_for(2)
    unknown = [m for m in methods if m not in runs]
    if unknown:
        p.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(runs)}")
    print(f"machine: {machine(device)}\nlayout: {args.layout}, channels / {ws}, {args.size}px, {args.steps} steps, {args.dtype}, "
          f"reps {args.reps}")
    pieces = floor_pieces(tsam, device, max(3, args.reps), args.size, layout["call"], args.steps)
    print("pieces (s): " + ", ".join(f"{k} {v:.4f}" for k, v in pieces.items()))
    results: dict[str, dict[str, Any]] = {}
    for name in methods:
        warmups[name]()  # a 2-step run of each method: kernels, caches, allocator
    for name in methods:
        counter = PassCounter(tsam.adapter.denoiser)
        with PeakMemory(device) as mem:
            times = timed(runs[name], args.reps, device, warmup=0)
        counter.handle.remove()
        results[name] = {"median_s": statistics.median(times), "times_s": times,
                         "sampling_passes": counter.sampling // args.reps, "update_passes": counter.update // args.reps,
                         "peak_bytes": mem.peak, "peak_above_start_bytes": mem.peak - mem.base}
    ref = results.get("reference", {}).get("median_s")
    print(f"\n{'method':<14}{'median s':>10}{'x ref':>8}{'floor s':>10}{'x floor':>9}{'passes s/u':>12}{'peak MiB':>10}{'x ref':>7}")
    for name, r in results.items():
        floor = floor_seconds(ref, r["update_passes"], pieces["partial_fwd_bwd_b1"]) if ref else None
        r["floor_s"] = floor
        ref_peak = results.get("reference", {}).get("peak_bytes")
        print(f"{name:<14}{r['median_s']:>10.2f}{r['median_s'] / ref if ref else float('nan'):>8.2f}"
              f"{floor if floor else float('nan'):>10.2f}{r['median_s'] / floor if floor else float('nan'):>9.2f}"
              f"{r['sampling_passes']:>6}/{r['update_passes']:<5}{r['peak_bytes'] / 2**20:>10.0f}"
              f"{r['peak_bytes'] / ref_peak if ref_peak else float('nan'):>7.2f}")
    if "attend-excite" in results and "diffusers-ae" in results:
        ours, theirs = results["attend-excite"], results["diffusers-ae"]
        print(f"\nattend-excite vs diffusers' StableDiffusionAttendAndExcitePipeline, same settings: {theirs['median_s']:.2f} s / "
              f"{ours['median_s']:.2f} s = {theirs['median_s'] / ours['median_s']:.2f}x faster "
              f"(denoiser passes with grad: {ours['update_passes']} here, {theirs['update_passes']} there)")
    iso = update_cost(tsam, device, args.size, profile=args.profile, extra=layout["call"])
    print(f"\none update at batch 1, isolated: {iso['per_update_ms']:.1f} ms "
          f"(floor piece: partial forward + latent backward {pieces['partial_fwd_bwd_b1'] * 1000:.1f} ms)")
    losses = loss_timing(device)
    print("\nsimilarity_matrix + tsam_loss, forward + backward, 75 tokens: " + ", ".join(f"{k} {v:.2f} ms" for k, v in losses.items()))
    report = {"machine": machine(device), "args": vars(args), "width_scale": ws, "pieces_s": pieces, "methods": results, "loss_ms": losses,
              "isolated_update": iso}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
