"""ShapesBench: fixed ShapesWorld prompt lists and the exact ``shapes`` metric (ShapesJudge).

``shapes-dev`` (for tuning) and ``shapes-test`` (for reporting; never tune on it) hold 116 prompts
each, 6 to 32 per template (``PER_TEMPLATE``), drawn from the test distribution (held-out colour/shape pairings
included) with fixed seeds; no prompt is in both. They ship as JSON lines in
``tsam_diffusion/data/prompts/shapes/`` (made by ``make_suite``; ``python -m
tsam_diffusion.mini.shapesbench`` rewrites them) with ids ``shapes-test:<template>-<k>``.

The ``shapes`` metric judges each image against its prompt: ``presence`` (fraction of named objects
present), ``binding`` (fraction of named colours on the right object; absent when no colour is
named), ``whole`` (all present and bound), ``exact`` (whole and no extra object), and the same
four per template as ``<value>@<template>``, and, for prompts of two or more objects, per kind of
pairing as ``<value>@held-out`` (a named colour/shape pairing of ``world.HOLDOUT_PAIRS``, seen in
training only alone) or ``<value>@seen-pairs`` (none).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .judge import Verdict, infer_template, judge, parse_prompt
from .world import HOLDOUT_PAIRS, TEMPLATES, caption, sample_spec

# "one" has 28 distinct prompts and "two-plain" 12, shared out between the two suites
PER_TEMPLATE = {"one": 14, "two-attr": 32, "two-plain": 6, "with": 16, "attr-plain": 16, "three-attr": 32}
SEEDS = {"shapes-dev": 1001, "shapes-test": 2002}


def make_suite(name: str, exclude: set[str] = frozenset()) -> list[dict[str, Any]]:
    """The prompt records of a ShapesBench suite: distinct prompts, none in ``exclude``."""
    rng = np.random.default_rng(SEEDS[name])
    records = []
    for template, count in PER_TEMPLATE.items():
        texts: list[str] = []
        for _ in range(100_000):
            if len(texts) == count:
                break
            spec = sample_spec(rng, template, split="test")
            text = caption(spec, template)
            if text not in texts and text not in exclude:
                texts.append(text)
                records.append({"id": f"{template}-{len(texts)}", "prompt": text, "template": template,
                                "spec": [list(s) for s in spec]})
        else:
            raise RuntimeError(f"{name}: could not draw {count} distinct {template!r} prompts")
    return records


def write_suites(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    dev = make_suite("shapes-dev")
    test = make_suite("shapes-test", exclude={r["prompt"] for r in dev})
    for name, records in (("shapes-dev", dev), ("shapes-test", test)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def verdict_values(v: Verdict) -> dict[str, float]:
    """``presence``, ``whole``, ``exact`` and (when a colour is named) ``binding`` of one verdict."""
    values = {"presence": float(np.mean(v.present)), "whole": float(v.whole), "exact": float(v.exact)}
    bound = [b for b in v.bound if b is not None]
    if bound:
        values["binding"] = float(np.mean(bound))
    return values


def pairing_group(prompt: str) -> str | None:
    """``"held-out"`` if a multi-object prompt names a held-out (colour, shape) pairing, else
    ``"seen-pairs"``; ``None`` for a single object (held-out pairings occur alone in training)."""
    spec = parse_prompt(prompt)
    if len(spec) < 2:
        return None
    return "held-out" if any((colour, shape) in HOLDOUT_PAIRS for shape, colour in spec) else "seen-pairs"


class ShapesMetric:
    """The ``shapes`` metric: ShapesJudge's verdict on each image (no weights needed)."""

    name = "shapes"

    def score(self, images, prompts: list[str], metas: list[dict]) -> list[dict[str, float]]:
        out = []
        for image, prompt, meta in zip(images, prompts, metas):
            template = (meta or {}).get("template") or infer_template(prompt)
            values = verdict_values(judge(np.asarray(image.convert("RGB")), prompt))
            groups = [template] + [g for g in [pairing_group(prompt)] if g]
            values.update({f"{k}@{g}": x for k, x in list(values.items()) for g in groups})
            out.append(values)
        return out


def shapes_metric(device: str = "cpu", **options: Any) -> ShapesMetric:
    if options:
        raise ValueError(f"the shapes metric takes no options, got {sorted(options)}")
    return ShapesMetric()


assert set(PER_TEMPLATE) == set(TEMPLATES)

if __name__ == "__main__":
    from importlib.resources import files

    write_suites(Path(str(files("tsam_diffusion") / "data" / "prompts" / "shapes")))
