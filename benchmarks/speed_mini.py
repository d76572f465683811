"""Speed of the bundled tsam-mini: the README's main command end to end, and T-SAM against plain sampling.

    python benchmarks/speed_mini.py                 # CPU
    python benchmarks/speed_mini.py --device cuda

Times, at the model's defaults (25 DDIM steps, guidance scale 4, preset ``mini``):

- ``main_command_s``: ``tsam generate "a red circle and a blue square" --compare --save-maps`` in a
  fresh process (Python start, imports, model load, T-SAM image, baseline, comparison and maps);
- ``load_s``: ``TSAMPipeline.from_pretrained("tsam-mini")`` in this process;
- per batch size: ``reference`` (``TSAMMiniPipeline.__call__``), ``none`` (``TSAMPipeline``,
  ``tsam=None``) and ``mini``, with denoiser passes, the floor (reference + one partial forward and
  latent-only backward per update, timed with the default attention processors) and peak memory;
- one isolated update at batch 1.

A script that prints figures (``--json`` writes them); it asserts nothing about time.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from speed import PassCounter, PeakMemory, forward_backward_to_last_read, floor_seconds, machine, timed, update_cost
from tsam_diffusion import TSAMConfig, TSAMPipeline
from tsam_diffusion.guidance import select_layers

PROMPT = "a red circle and a blue square"


def main_command_seconds() -> float:
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "tsam_diffusion.cli", "generate", PROMPT, "--compare", "--save-maps", "--out", out],
                       check=True, capture_output=True)
        return time.perf_counter() - t0


def partial_fwd_bwd(tsam: TSAMPipeline, device: str, batch: int, reps: int) -> float:
    """One update's floor: forward until the last layer read, backward to the latent only."""
    pipe, adapter = tsam.pipe, tsam.adapter
    cond = adapter.encode_prompt([PROMPT], None, batch, 1.0)
    size = pipe.unet.config.sample_size
    read = [layer.module for layer in select_layers(adapter.cross_attention_layers(size, size), TSAMConfig.preset("mini"))]
    z = torch.randn(batch, 3, size, size, device=device)
    t = torch.tensor(981, device=device)

    def run() -> None:
        forward_backward_to_last_read(
            lambda x: pipe.unet(x, t, encoder_hidden_states=cond.cond, encoder_attention_mask=cond.extra["cond_mask"]), read, z)

    pipe.unet.requires_grad_(False)
    return statistics.median(timed(run, reps, device))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-sizes", default="1,8")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    device = args.device
    report: dict = {"machine": machine(device), "main_command_s": None if device != "cpu" else main_command_seconds()}
    t0 = time.perf_counter()
    tsam = TSAMPipeline.from_pretrained("tsam-mini").to(device)
    report["load_s"] = time.perf_counter() - t0
    pipe = tsam.pipe
    tsam.set_progress_bar_config(disable=True)
    gen = lambda b: [torch.Generator("cpu").manual_seed(s) for s in range(b)]  # noqa: E731
    print(f"machine: {report['machine']}")
    if report["main_command_s"] is not None:
        print(f"main command (fresh process, --compare --save-maps): {report['main_command_s']:.1f} s")
    print(f"model load: {report['load_s']:.2f} s\n")
    print(f"{'batch':>5} {'method':<10}{'median s':>10}{'x ref':>8}{'floor s':>10}{'x floor':>9}{'passes s/u':>12}{'peak MiB':>10}")
    report["batches"] = {}
    for b in (int(x) for x in args.batch_sizes.split(",")):
        runs = {
            "reference": lambda: pipe(PROMPT, num_images_per_prompt=b, generator=gen(b), output_type="pt"),
            "none": lambda: tsam(PROMPT, tsam=None, num_images_per_prompt=b, generator=gen(b), output_type="pt"),
            "mini": lambda: tsam(PROMPT, num_images_per_prompt=b, generator=gen(b), output_type="pt"),
        }
        piece = partial_fwd_bwd(tsam, device, b, max(3, args.reps))
        rows = {}
        for name, fn in runs.items():
            counter = PassCounter(pipe.unet)
            fn()  # warm-up, and the pass count of one run
            counter.handle.remove()
            with PeakMemory(device) as mem:
                times = timed(fn, args.reps, device, warmup=0)
            rows[name] = {"median_s": statistics.median(times), "times_s": times, "sampling_passes": counter.sampling,
                          "update_passes": counter.update, "peak_bytes": mem.peak}
        ref = rows["reference"]["median_s"]
        for name, r in rows.items():
            r["floor_s"] = floor_seconds(ref, r["update_passes"], piece)
            print(f"{b:>5} {name:<10}{r['median_s']:>10.3f}{r['median_s'] / ref:>8.2f}{r['floor_s']:>10.3f}"
                  f"{r['median_s'] / r['floor_s']:>9.2f}{r['sampling_passes']:>6}/{r['update_passes']:<5}{r['peak_bytes'] / 2**20:>10.0f}")
        report["batches"][b] = {"partial_fwd_bwd_s": piece, "methods": rows}
    report["isolated_update"] = update_cost(tsam, device, pipe.unet.config.sample_size)
    print(f"\none update at batch 1, isolated: {report['isolated_update']['per_update_ms']:.1f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
