"""Figures and numbers for tsam-mini's model card (docs/tsam-mini.md).

    python benchmarks/mini_card.py --out docs/tsam-mini --seeds 8

Writes, for the bundled model (or ``--model DIR``):

- ``loss.png``: the training loss from ``train_log.csv``;
- ``confusion.png`` and ``card.json``: ShapesJudge's shape and colour confusion matrices of vanilla
  samples of every single-object prompt (28 x ``--seeds``) and of the ``shapes-dev`` prompts;
  single-object accuracy; the text encoder's bound/unbound T' and [CLS] sink;
- ``judged.png``: 36 ``shapes-dev`` samples with the judge's reading under each, to check it by eye;
- ``samples.png``: ``shapes-dev`` prompts, vanilla above T-SAM (the model's preset), same seeds;
- ``maps_*.png``: T, S (first and last update) and the per-token maps of one T-SAM sample with the
  model's preset, and ``maps_eq7_*.png`` the same with eq. 7's plain S (``center_maps=False``).

A script that prints figures; it tunes nothing.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from mini_eval import attention_stats, generate, rates
from tsam_diffusion import TSAMConfig, TSAMPipeline, viz
from tsam_diffusion.bench.suites import load_suite
from tsam_diffusion.mini.judge import confusion, judge
from tsam_diffusion.mini.model import TSAMMiniPipeline, bundled_dir
from tsam_diffusion.mini.world import COLORS, SHAPES, caption


def loss_figure(log: Path, out: Path) -> None:
    rows = list(csv.DictReader(log.open()))
    step = np.array([float(r["step"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    fig = viz._new_figure(6, 3.2)
    ax = fig.add_subplot(111)
    ax.plot(step, loss, lw=0.8, color="tab:blue", label="noise-prediction MSE, mean of 25 steps")
    if rows and "grounding" in rows[0]:  # trained with the grounding loss (recipe v2)
        ax.plot(step, [float(r["grounding"]) for r in rows], lw=0.8, color="tab:orange", label="grounding loss (weight 1)")
    ax.set_yscale("log")
    ax.set_xlabel("step (batch 32)")
    ax.set_ylabel("loss")
    ax.set_title("tsam-mini training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    viz._figure_to_image(fig).save(out)


def confusion_figure(conf_single, conf_dev, out: Path) -> None:
    fig = viz._new_figure(12, 7.5)
    panels = [(conf_single.shapes, SHAPES, "shape, single objects"), (conf_single.colors, COLORS, "colour, single objects"),
              (conf_dev.shapes, SHAPES, "shape, shapes-dev prompts"), (conf_dev.colors, COLORS, "colour, shapes-dev prompts")]
    for k, (M, labels, title) in enumerate(panels):
        ax = fig.add_subplot(2, 2, k + 1)
        rate = M / np.maximum(M.sum(1, keepdims=True), 1)
        ax.imshow(rate, cmap="Blues", vmin=0, vmax=1)
        for i in range(M.shape[0]):
            for j in range(M.shape[1]):
                if M[i, j]:
                    ax.text(j, i, str(M[i, j]), ha="center", va="center", fontsize=7, color="white" if rate[i, j] > 0.6 else "black")
        ax.set_xticks(range(M.shape[1]), [*labels, "missing"], rotation=45, fontsize=7)
        ax.set_yticks(range(M.shape[0]), labels, fontsize=7)
        ax.set_xlabel("judged")
        ax.set_ylabel("named in the prompt")
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    viz._figure_to_image(fig).save(out)


def sample_grid(rows: list[tuple[str, list[np.ndarray], list[np.ndarray]]], out: Path, scale: int = 3) -> None:
    """One row per prompt: its vanilla samples, a gap, its T-SAM samples."""
    tile, label_w, gap = 32 * scale, 260, 12
    n = len(rows[0][1])
    grid = Image.new("RGB", (label_w + 2 * n * (tile + 2) + gap, 20 + len(rows) * (tile + 4)), "white")
    draw = ImageDraw.Draw(grid)
    draw.text((label_w, 4), "vanilla", fill="black")
    draw.text((label_w + n * (tile + 2) + gap, 4), "T-SAM", fill="black")
    for r, (prompt, vanilla, guided) in enumerate(rows):
        y = 20 + r * (tile + 4)
        draw.text((4, y + tile // 2 - 6), prompt, fill="black")
        for k, img in enumerate([*vanilla, *guided]):
            x = label_w + k * (tile + 2) + (gap if k >= n else 0)
            grid.paste(Image.fromarray(img).resize((tile, tile), Image.NEAREST), (x, y))
    grid.save(out)


def judged_sheet(pairs: list[tuple[str, np.ndarray]], out: Path, cols: int = 6, scale: int = 4) -> None:
    """Samples with the judge's reading under each (detections, then the verdict), to check it by eye."""
    tile, text_h = 32 * scale, 64
    rows = (len(pairs) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * (tile + 150), rows * (tile + text_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (prompt, img) in enumerate(pairs):
        x, y = (k % cols) * (tile + 150), (k // cols) * (tile + text_h)
        sheet.paste(Image.fromarray(img).resize((tile, tile), Image.NEAREST), (x, y))
        v = judge(img, prompt)
        found = [f"{d.color} {d.shape}" for d in v.detections]
        verdict = "whole" if v.whole else "missing" if not all(v.present) else "mis-bound"
        lines = [prompt, "judged: " + (", ".join(found) or "nothing"), f"-> {verdict}, extra {v.extra}"]
        for i, line in enumerate(lines):
            draw.text((x + 2, y + tile + 2 + 13 * i), line[:40], fill="black")
    sheet.save(out)


def map_stats(tsam: TSAMPipeline, prompts: list[str], steps: int, scale: float) -> dict[str, float]:
    """Why eq. 7 barely moves on this model: the mean off-diagonal C (cosine of two tokens' maps) at
    the first and last update, plain (eq. 7) and centred, and the maps' spatial contrast (std / mean)."""
    from tsam_diffusion.functional import smooth_maps

    out: dict[str, list[float]] = {}
    cfg = TSAMConfig.preset(tsam.adapter.default_preset, alpha=1e-9)  # a vanishing step: maps recorded, image unchanged
    for prompt in prompts:
        d = tsam(prompt, tsam=cfg, num_inference_steps=steps, guidance_scale=scale, num_images_per_prompt=2,
                 generator=[torch.Generator().manual_seed(s) for s in range(2)], output_type="np").diagnostics
        for when, A in (("first", d.A_first), ("last", d.A_last)):
            maps = A.float().transpose(-1, -2).reshape(A.shape[0], A.shape[2], *d.map_size)
            m = smooth_maps(maps).flatten(-2)  # [B, n, M]
            for kind, x in (("eq7", m), ("centred", m - m.mean(-1, keepdim=True))):
                u = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
                C = u @ u.transpose(-1, -2)
                n = C.shape[-1]
                off = C[:, ~torch.eye(n, dtype=torch.bool)]
                out.setdefault(f"C_offdiag_{kind}_{when}", []).append(float(off.mean()))
            out.setdefault(f"contrast_{when}", []).append(float((m.std(-1) / m.mean(-1)).mean()))
    return {k: float(np.mean(v)) for k, v in out.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(bundled_dir()))
    p.add_argument("--out", type=Path, default=Path("docs/tsam-mini"))
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--grid-prompts", type=int, default=12)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    pipe = TSAMMiniPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    tsam = TSAMPipeline(pipe)
    steps, scale = tsam.adapter.default_steps, tsam.adapter.default_guidance_scale
    seeds = list(range(args.seeds))
    card: dict = {"attention": attention_stats(pipe)}

    log = Path(args.model) / "train_log.csv"
    if log.exists():
        loss_figure(log, args.out / "loss.png")

    singles = [caption([(s, c)], "one") for s in SHAPES for c in COLORS]
    single_pairs = generate(tsam, singles, seeds, None, steps, scale)
    card["single"] = rates(single_pairs, {s: "one" for s in singles})["all"]
    per_object = {}
    for prompt, image in single_pairs:
        per_object.setdefault(prompt, []).append(rates([(prompt, image)], {prompt: "one"})["all"]["whole"])
    card["single_per_prompt"] = {k: float(np.mean(v)) for k, v in per_object.items()}
    print("single objects:", card["single"])

    dev = load_suite("shapes-dev")
    dev_pairs = generate(tsam, [q.text for q in dev], seeds[:4], None, steps, scale)
    card["dev_vanilla"] = rates(dev_pairs, {q.text: q.meta["template"] for q in dev})  # per template, 4 seeds
    print("shapes-dev, vanilla:", {k: round(v["whole"], 3) for k, v in card["dev_vanilla"].items()})
    conf_single = confusion([img for _, img in single_pairs], [p for p, _ in single_pairs])
    conf_dev = confusion([img for _, img in dev_pairs], [p for p, _ in dev_pairs])
    card["confusion"] = {"single": {"shapes": conf_single.shapes.tolist(), "colors": conf_single.colors.tolist()},
                         "dev": {"shapes": conf_dev.shapes.tolist(), "colors": conf_dev.colors.tolist()},
                         "labels": {"shapes": [*SHAPES, "missing"], "colors": [*COLORS, "missing"]}}
    confusion_figure(conf_single, conf_dev, args.out / "confusion.png")
    judged_sheet(dev_pairs[:: max(1, len(dev_pairs) // 36)][:36], args.out / "judged.png")

    picks = [q.text for q in dev if q.meta["template"] != "one"][:: max(1, 100 // args.grid_prompts)][: args.grid_prompts]
    grid_seeds = seeds[:4]
    rows = []
    for prompt in picks:
        v = generate(tsam, [prompt], grid_seeds, None, steps, scale)
        g = generate(tsam, [prompt], grid_seeds, "default", steps, scale)
        rows.append((prompt, [img for _, img in v], [img for _, img in g]))
    sample_grid(rows, args.out / "samples.png")

    card["map_stats"] = map_stats(tsam, picks, steps, scale)
    print("cross-attention map statistics:", card["map_stats"])

    prompt = picks[0]
    preset = TSAMConfig.preset(tsam.adapter.default_preset)
    for stem, cfg in (("maps", preset), ("maps_eq7", preset.replace(center_maps=False))):  # the preset; eq. 7's plain S
        result = tsam(prompt, tsam=cfg, num_inference_steps=steps, guidance_scale=scale, generator=torch.Generator().manual_seed(0))
        viz.save_diagnostic_maps(result.diagnostics, 0, args.out, stem, image=result.images[0])
        card[f"{stem}_S_first"] = result.diagnostics.updates[0].S[0].tolist()
    card["maps_prompt"] = prompt
    (args.out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
