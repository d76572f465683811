"""Evaluate a trained tsam-mini with ShapesJudge: single objects, ShapesBench dev per template, T-SAM sweep.

    python benchmarks/mini_eval.py --model path/to/model --seeds 8 --alphas 0,1,3,10 --json out.json

For each alpha (0 = vanilla) it generates every ``shapes-dev`` prompt with the same seeds and
reports, per template, the judge's presence, binding and whole-prompt rates (T-SAM: the ``mini``
preset with that alpha); plus the accuracy on
all 28 single-object prompts, the text encoder's bound/unbound self-attention (T') and sink, and a
sample grid. A script that prints figures; tune on ``shapes-dev`` only.
"""
from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import numpy as np
import torch

from tsam_diffusion import TSAMConfig, TSAMPipeline
from tsam_diffusion.bench.suites import load_suite
from tsam_diffusion.mini.judge import judge
from tsam_diffusion.mini.model import TSAMMiniPipeline, bundled_dir
from tsam_diffusion.mini.shapesbench import verdict_values
from tsam_diffusion.mini.world import COLORS, SHAPES, caption


def generate(tsam: TSAMPipeline, prompts: list[str], seeds: list[int], config, steps: int, scale: float):
    """Images (uint8 arrays) for every prompt x seed, one batch per prompt."""
    out = []
    for p in prompts:
        res = tsam(p, tsam=config, num_inference_steps=steps, guidance_scale=scale, num_images_per_prompt=len(seeds),
                   generator=[torch.Generator().manual_seed(s) for s in seeds], output_type="np")
        out += [(p, np.round(img * 255).astype(np.uint8)) for img in res.images]
    return out


def rates(pairs, templates: dict[str, str]) -> dict[str, dict[str, float]]:
    acc: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for prompt, image in pairs:
        for name, value in verdict_values(judge(image, prompt)).items():
            for key in ("all", templates[prompt]):
                acc[key][name].append(value)
    return {k: {m: float(np.mean(x)) for m, x in d.items()} for k, d in acc.items()}


def attention_stats(pipe: TSAMMiniPipeline) -> dict[str, float]:
    """Mean T' (eq. 2) of bound (colour, its shape) vs unbound (colour, the other shape) pairs, and the [CLS] sink."""
    from tsam_diffusion.adapters import adapter_for

    prompts = [caption([(s1, c1), (s2, c2)], "two-attr") for s1, c1, s2, c2 in
               [(SHAPES[i % 4], COLORS[i % 7], SHAPES[(i + 1) % 4], COLORS[(i + 3) % 7]) for i in range(28)]]
    bound, unbound, sink, rest = [], [], [], []
    for text in adapter_for(pipe).text_attention(prompts):
        T = text.attentions.float().mean(dim=(0, 1))
        sym = (T + T.T) / 2
        k = text.keep.tolist()  # "a red circle and a blue square": colours at tokens 1, -2, shapes at 2, -1
        c1, s1, c2, s2 = k[1], k[2], k[-2], k[-1]
        bound += [sym[s1, c1].item(), sym[s2, c2].item()]
        unbound += [sym[s1, c2].item(), sym[s2, c1].item()]
        sink.append(T[k, 0].mean().item())
        rest.append(T[k][:, k].mean().item())
    return {"bound": float(np.mean(bound)), "unbound": float(np.mean(unbound)), "ratio": float(np.mean(bound) / np.mean(unbound)),
            "cls_sink": float(np.mean(sink)), "content_mean": float(np.mean(rest))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(bundled_dir()), help="model folder (default: the bundled tsam-mini)")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance-scale", type=float, default=4.0)
    p.add_argument("--alphas", default="0,1,3,10")
    p.add_argument("--gamma", type=float, default=2.0)
    p.add_argument("--center-maps", action=argparse.BooleanOptionalAction, default=True,
                   help="centred S (the mini preset's) or eq. 7's plain S (--no-center-maps)")
    p.add_argument("--json", default=None)
    p.add_argument("--grid", default=None, help="write a PNG grid of dev samples (vanilla)")
    p.add_argument("--limit", type=int, default=None, help="only the first N dev prompts (a quick check)")
    args = p.parse_args()
    pipe = TSAMMiniPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    tsam = TSAMPipeline(pipe)
    seeds = list(range(args.seeds))
    report: dict = {"attention": attention_stats(pipe)}
    print("text self-attention:", report["attention"])

    singles = [caption([(s, c)], "one") for s in SHAPES for c in COLORS][: args.limit]
    t0 = time.time()
    pairs = generate(tsam, singles, seeds, None, args.steps, args.guidance_scale)
    report["single"] = rates(pairs, {s: "one" for s in singles})["all"]
    print(f"single objects ({len(pairs)} images, {time.time() - t0:.0f}s):", report["single"])

    dev = load_suite("shapes-dev")[: args.limit]
    templates = {q.text: q.meta["template"] for q in dev}
    report["dev"] = {}
    for alpha in (float(a) for a in args.alphas.split(",")):
        config = None if alpha == 0 else TSAMConfig.preset("mini", alpha=alpha, gamma=args.gamma, center_maps=args.center_maps)
        t0 = time.time()
        pairs = generate(tsam, [q.text for q in dev], seeds, config, args.steps, args.guidance_scale)
        report["dev"][alpha] = rates(pairs, templates)
        print(f"\nalpha={alpha} ({len(pairs)} images, {time.time() - t0:.0f}s)")
        for key, vals in sorted(report["dev"][alpha].items()):
            print(f"  {key:<11}" + "  ".join(f"{m} {v:.3f}" for m, v in sorted(vals.items())))
        if args.grid and alpha == 0:
            from PIL import Image

            tiles = [Image.fromarray(img).resize((96, 96), Image.NEAREST) for _, img in pairs[: 8 * len(seeds)][:: max(1, len(seeds) // 2)][:48]]
            grid = Image.new("RGB", (96 * 8, 96 * ((len(tiles) + 7) // 8)))
            for i, t in enumerate(tiles):
                grid.paste(t, ((i % 8) * 96, (i // 8) * 96))
            grid.save(args.grid)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
