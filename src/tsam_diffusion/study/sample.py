"""``tsam study create``: draw the comparisons of a pairwise study from a run, reproducibly.

A comparison ``A:B`` (``tsam:vanilla``) gives items of one prompt and one seed with both methods'
images. ``prompts`` prompts (of those that have both) and ``seeds`` seeds of each are drawn with
``numpy.random.default_rng(sample_seed)``, so the same command draws the same items. Attention checks
are mixed in, one for every ``check_every`` pairs (at least one): method ``A``'s image of a prompt
against the same method's image of another prompt, shown with the first prompt, so ``A``'s is right.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..bench.db import RunDB


def parse_pairs(spec: str) -> list[tuple[str, str]]:
    """``"tsam:vanilla,tsam:conform"`` -> ``[("tsam", "vanilla"), ("tsam", "conform")]``.

    A method name may itself contain ``:`` (``tsam:sd-ae``); the split is at the ``:`` that leaves two
    method names of the run, so the caller checks the names (``draw``)."""
    pairs = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part.count(":") < 1:
            raise ValueError(f"--pairs: {part!r} is not METHOD_A:METHOD_B (e.g. tsam:vanilla)")
        pairs.append(part)
    if not pairs:
        raise ValueError("--pairs names no comparison; give e.g. --pairs tsam:vanilla,tsam:conform")
    return pairs  # type: ignore[return-value]


def _split(part: str, methods: set[str]) -> tuple[str, str]:
    cuts = [(part[:k], part[k + 1:]) for k, ch in enumerate(part) if ch == ":"]
    fits = [(a, b) for a, b in cuts if a in methods and b in methods and a != b]
    if len(fits) != 1:
        raise ValueError(f"--pairs: {part!r} does not name two different methods of this run; its methods are: "
                         f"{', '.join(sorted(methods))}")
    return fits[0]


def draw(run_dir: Any, pairs: list[str], *, prompts: int | None = None, seeds: int | None = None, sample_seed: int = 0,
         check_every: int = 10) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``(items, settings)`` for ``StudyStore.replace_items``."""
    if prompts is not None and prompts < 1 or seeds is not None and seeds < 1:
        raise ValueError("--prompts and --seeds must be >= 1")
    rows = RunDB(run_dir, create=False).images()
    if not rows:
        raise ValueError(f"{run_dir} has no images yet; generate them with `tsam bench run` first")
    methods = {r["method"] for r in rows}
    by_key = {(r["method"], r["prompt_id"], r["seed"]): r for r in rows}
    rng = np.random.default_rng(sample_seed)
    items: list[dict[str, Any]] = []
    for part in pairs:
        a, b = _split(part, methods)
        both = sorted({(pid, s) for (m, pid, s) in by_key if m == a and (b, pid, s) in by_key})
        if not both:
            raise ValueError(f"--pairs {part}: no prompt and seed has images of both {a} and {b}")
        prompt_ids = sorted({pid for pid, _ in both})
        chosen = rng.permutation(prompt_ids)[: prompts or len(prompt_ids)]
        pairs_here = []
        for pid in sorted(chosen):
            its_seeds = sorted(s for p, s in both if p == pid)
            for s in sorted(rng.permutation(its_seeds)[: seeds or len(its_seeds)].tolist()):
                ra, rb = by_key[(a, pid, s)], by_key[(b, pid, s)]
                pairs_here.append({"comparison": f"{a} vs {b}", "kind": "pair", "prompt_id": pid, "prompt": ra["prompt"],
                                   "seed": int(s), "method_a": a, "method_b": b, "image_a": ra["image"], "image_b": rb["image"]})
        others = [k for k in by_key if k[0] == a]
        checks = []
        for k in range(max(1, len(pairs_here) // check_every) if len(prompt_ids) > 1 else 0):
            target = pairs_here[int(rng.integers(len(pairs_here)))]
            foreign = [o for o in others if o[1] != target["prompt_id"]]
            m, pid, s = foreign[int(rng.integers(len(foreign)))]
            checks.append({**target, "kind": "check", "method_b": f"{a} (other prompt)", "image_b": by_key[(m, pid, s)]["image"]})
        items += pairs_here + checks
    for k, item in enumerate(items):
        item["item_id"] = k + 1
    settings = {"pairs": pairs, "prompts": prompts, "seeds": seeds, "sample_seed": sample_seed, "check_every": check_every}
    return items, settings
