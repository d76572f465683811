"""Per-template whole-prompt accuracy of a scored ShapesBench run: vanilla and each method's paired
difference to it, with 95% intervals from resampling prompts (the model card's and README's tables).

    tsam bench score runs/v2-test --metrics shapes
    python benchmarks/shapes_table.py runs/v2-test --json docs/benchmarks/shapes-test-v2.json
    python benchmarks/shapes_table.py runs/v2-test --seeds 0-15      # only these seeds (a run still growing)

Rows: all prompts, then each ShapesBench template (``one`` is the single-object prompts; ``held-out``
and ``seen-pairs`` split the multi-object prompts by whether their colour-shape pairings were seen in
training). Differences are paired by (prompt, seed) with vanilla and bootstrapped over prompts
(``bench.stats.paired_by_prompt``, ``bootstrap_ci``); a bold cell's interval excludes 0. Prints a
Markdown table; ``--json`` also writes the figures. Only seeds present for every method are used,
so a partly generated run compares like with like.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from tsam_diffusion.bench.db import RunDB
from tsam_diffusion.bench.run import parse_seeds
from tsam_diffusion.bench.stats import bootstrap_ci, join_scores, paired_by_prompt

TEMPLATES = ("one", "two-attr", "two-plain", "with", "attr-plain", "three-attr", "held-out", "seen-pairs")


def table(run: Path, seeds: set[int] | None = None, baseline: str = "vanilla") -> tuple[list[str], dict[str, dict]]:
    """Markdown lines and the figures: per key, ``n``, the baseline's ``[mean, lo, hi]`` and each method's paired difference."""
    db = RunDB(run, create=False)
    rows = join_scores(db.images(), db.scores())
    if seeds is not None:
        rows = [r for r in rows if r["seed"] in seeds]
    methods = sorted({r["method"] for r in rows})
    if baseline not in methods:
        raise SystemExit(f"{run}: no {baseline!r} images to compare with (methods: {', '.join(methods) or 'none'})")
    done = {m: {(r["prompt_id"], r["seed"]) for r in rows if r["method"] == m and "shapes/whole" in r["scores"]}
            for m in methods}
    common = set.intersection(*done.values())
    rows = [r for r in rows if (r["prompt_id"], r["seed"]) in common]
    others = [m for m in methods if m != baseline]
    lines = ["| template | images | " + baseline + " | " + " | ".join(f"`{m}` - {baseline}" for m in others) + " |",
             "|---|---|---|" + "---|" * len(others)]
    figures: dict[str, dict] = {}
    for key in ["whole"] + [f"whole@{t}" for t in TEMPLATES]:
        metric = "shapes/" + key
        base = [(r["scores"][metric], r["prompt_id"]) for r in rows if r["method"] == baseline and metric in r["scores"]]
        if not base:
            continue
        mean, lo, hi = bootstrap_ci([v for v, _ in base], groups=[g for _, g in base])
        figures[key] = {"n": len(base), baseline: [mean, lo, hi]}
        cells = []
        for method in others:
            pairs = paired_by_prompt(rows, metric, method, baseline)
            d, dlo, dhi = bootstrap_ci([v for v, _ in pairs], groups=[g for _, g in pairs])
            figures[key][method] = [d, dlo, dhi]
            bold = "**" if dlo > 0 or dhi < 0 else ""
            cells.append(f"{bold}{d:+.3f} [{dlo:+.3f}, {dhi:+.3f}]{bold}")
        label = key.split("@", 1)[1] if "@" in key else "all"
        lines.append(f"| {label} | {len(base)} | {mean:.3f} [{lo:.3f}, {hi:.3f}] | " + " | ".join(cells) + " |")
    seeds_used = sorted({s for _, s in common})
    figures["_run"] = {"run": str(run), "seeds": seeds_used, "prompts": len({p for p, _ in common}), "methods": methods}
    return lines, figures


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a scored ShapesBench run folder (tsam bench score RUN --metrics shapes)")
    p.add_argument("--seeds", default=None, help="only these seeds: N, N-M or a list (default: every seed)")
    p.add_argument("--baseline", default="vanilla", help="the method the others are paired with (default: vanilla)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    lines, figures = table(args.run, set(parse_seeds(args.seeds)) if args.seeds else None, args.baseline)
    print("\n".join(lines))
    info = figures["_run"]
    print(f"\n{info['prompts']} prompts x seeds {info['seeds'][0]}-{info['seeds'][-1]} ({len(info['seeds'])}), every method on the same images' seeds")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
