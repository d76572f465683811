"""``tsam analyze outcomes``: do overlapping maps go with missing objects and correct binding? (Figure 4)

For the images of a scored benchmark run, the content tokens' maps at one denoising step (the
paper's step 10, 1-based) come from replaying each image: the same prompt, seed, method and
sampling settings, with ``record_maps`` (an extra conditional pass; the sampling itself is the
run's, and the replayed image is compared with the stored one: equal, or a level or so apart where the
run batched other seeds together, which changes float rounding). Per image:

- ``objects_cos``: ``C`` of the two objects' nouns (unbound; mean over pairs with three objects);
- ``bound_cos``: ``C`` of each attribute and its own noun, averaged over the objects;
- ``unbound_attribute_cos``: ``C`` of an attribute and another object's noun.

Two questions, as the paper's Figure 4 asks them:

- presence (prompts with two or more objects): correct = every object present;
  the paper finds correct images where ``objects_cos`` is low;
- binding (prompts with attributes, images with every object present): correct = every object
  has its attribute; the paper finds correct images where ``bound_cos`` is high.

Verdicts come from the run's scores: ShapesJudge's ``shapes/presence`` and ``shapes/binding``
(1 = all objects), or TIFA's per-type counts (``tifa/correct:object`` = ``tifa/questions:object``,
and ``color``). Replayed values are saved as they are made (``replayed.jsonl``), so an interrupted
analysis continues where it stopped.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from ..bench.db import RunDB
from ..bench.stats import join_scores
from ..bench.subjects import token_groups
from ..bench.suites import Prompt
from ..files import write_text
from ..functional import map_cosine
from ..methods import config_from_dict
from . import output
from .pairs import BOUND, UNBOUND_ATTRIBUTE, UNBOUND_OBJECTS, pair_value, word_pairs
from .stats import mean_or_nan, separation

CACHE = "replayed.jsonl"


def verdicts(scores: dict[str, float]) -> tuple[bool | None, bool | None]:
    """``(all objects present, all attributes bound)`` from an image's scores; None where not scored."""
    if "shapes/presence" in scores:
        binding = scores.get("shapes/binding")
        return scores["shapes/presence"] >= 1.0, None if binding is None else binding >= 1.0

    def all_right(kind: str) -> bool | None:
        asked = scores.get(f"tifa/questions:{kind}")
        return None if not asked else scores.get(f"tifa/correct:{kind}", 0.0) >= asked

    return all_right("object"), all_right("color")


def _prompt(row: dict[str, Any]) -> Prompt:
    return Prompt(row["prompt_id"], row["prompt"], row["suite"], row["prompt_meta"] or {})


def _config(row: dict[str, Any]) -> Any:
    stored = row["config"]
    return config_from_dict(stored["guidance"] if "guidance" in stored else stored.get("tsam"))


def replay(pipeline: Any, rows: list[dict[str, Any]], run_dir: Path, settings: dict[str, Any], step: int) -> list[dict[str, Any]]:
    """Maps at ``step`` (1-based) of images of one prompt and method, regenerated from their seeds."""
    first = rows[0]
    prompt, config = _prompt(first), _config(first)
    groups = token_groups(prompt)
    sampling = {k: first["config"][k] for k in ("num_inference_steps", "guidance_scale")}
    result = pipeline(prompt.text, method=config, tokens=groups if config is not None and config.uses_tokens else None,
                      **sampling, height=settings.get("height"), width=settings.get("width"),
                      num_images_per_prompt=len(rows), record_maps=[step - 1],
                      generator=[torch.Generator("cpu").manual_seed(r["seed"]) for r in rows])
    d = result.diagnostics
    tokens = d.tokens[0]
    pairs = word_pairs(groups, pipeline.adapter.word_pieces, tokens, prompt.text)
    C = map_cosine(d.maps[step - 1][:, :, : len(tokens)], *d.map_size).numpy()
    out = []
    for b, row in enumerate(rows):
        values = {label: [pair_value(C[b], p) for p in pairs if p.label == label]
                  for label in (BOUND, UNBOUND_OBJECTS, UNBOUND_ATTRIBUTE)}
        stored = np.asarray(Image.open(run_dir / row["image"]).convert("RGB"), dtype=np.int16)
        made = np.asarray(result.images[b].convert("RGB"), dtype=np.int16)
        out.append({"job_id": row["job_id"], "objects_cos": mean_or_nan(values[UNBOUND_OBJECTS]),
                    "bound_cos": mean_or_nan(values[BOUND]), "unbound_attribute_cos": mean_or_nan(values[UNBOUND_ATTRIBUTE]),
                    "replay_max_diff": int(np.abs(stored - made).max()) if stored.shape == made.shape else 255})
    return out


def analyze_outcomes(pipeline_factory: Any, run_dir: Path, out: Path, *, step: int = 10, methods: Sequence[str] = ("vanilla",),
                     limit: int | None = None, batch_size: int = 16, bootstrap: int = 1000,
                     progress: bool = True) -> dict[str, Any]:
    """Replay (or read from the cache) the maps of the run's scored multi-object images, then compare."""
    from tqdm.auto import tqdm

    db = RunDB(run_dir, create=False)
    settings = db.settings()
    rows = join_scores(db.images(), db.scores())
    known = sorted({r["method"] for r in rows})
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise ValueError(f"method(s) {unknown} are not in the run {run_dir}; it has: {', '.join(known) or 'none'}")
    rows = [r for r in rows if r["method"] in methods and verdicts(r["scores"])[0] is not None
            and len(token_groups(_prompt(r)) or []) >= 2]
    if not rows:
        raise ValueError(f"no scored images of prompts with two or more objects in {run_dir} for {', '.join(methods)}; "
                         "score the run first (tsam bench score RUN --metrics shapes, or tifa)")
    rows = rows[:limit] if limit else rows
    out.mkdir(parents=True, exist_ok=True)
    cache = out / CACHE
    done = {}
    if cache.exists():
        for line in cache.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                if rec.get("step") != step:
                    raise ValueError(f"{cache} holds maps of step {rec.get('step')}, not {step}; use another --out "
                                     "or delete it")
                done[rec["job_id"]] = rec
    todo: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r["job_id"] not in done:
            todo.setdefault((r["prompt_id"], r["method"]), []).append(r)
    chunks = [rs[k: k + batch_size] for rs in todo.values() for k in range(0, len(rs), batch_size)]
    if chunks:
        pipeline = pipeline_factory()
        pipeline.set_progress_bar_config(disable=True)
        with tqdm(total=sum(len(c) for c in chunks), unit="img", desc="replaying", disable=not progress) as bar:
            for chunk in chunks:
                made = [{**m, "step": step} for m in replay(pipeline, chunk, run_dir, settings, step)]
                with cache.open("a") as f:  # appended as made: an interrupted analysis resumes from here
                    f.write("".join(json.dumps(m) + "\n" for m in made))
                done.update({m["job_id"]: m for m in made})
                bar.update(len(chunk))
    return summarise(rows, done, out, step, methods, bootstrap)


def summarise(rows: list[dict[str, Any]], done: dict[str, dict[str, Any]], out: Path, step: int, methods: Sequence[str],
              bootstrap: int) -> dict[str, Any]:
    """The two questions' distributions, separation statistics, figures and files."""
    table = []
    for r in rows:
        presence, binding = verdicts(r["scores"])
        table.append({"job_id": r["job_id"], "method": r["method"], "prompt_id": r["prompt_id"], "prompt": r["prompt"],
                      "seed": r["seed"], "present": presence, "bound": binding,
                      **{k: v for k, v in done[r["job_id"]].items() if k not in ("job_id", "step")}})
    output.write_csv(out / "images.csv", table)
    replay_diffs = [t["replay_max_diff"] for t in table]
    summary: dict[str, Any] = {"methods": list(methods), "step": step, "images": len(table),
                               "replay_exact": float(np.mean([d == 0 for d in replay_diffs])),
                               "replay_max_diff": int(max(replay_diffs)), "figures": []}
    questions = (
        ("presence", "objects_cos", "present", lambda t: True, "lower for correct images"),
        ("binding", "bound_cos", "bound", lambda t: t["present"] and t["bound"] is not None and
         not math.isnan(t["bound_cos"]), "higher for correct images"),
    )
    for name, measure, verdict, eligible, expected in questions:
        sel = [t for t in table if eligible(t) and not math.isnan(t[measure])]
        values = np.array([t[measure] for t in sel])
        correct = np.array([bool(t[verdict]) for t in sel], dtype=bool)
        if not len(sel):
            summary[name] = {"note": "no eligible images"}
            continue
        stats = separation(values, correct, [t["prompt_id"] for t in sel], n=bootstrap)
        stats.update(measure=measure, paper=expected, n_correct=stats.pop("n_positive"), n_incorrect=stats.pop("n_negative"),
                     mean_correct=stats.pop("mean_positive"), mean_incorrect=stats.pop("mean_negative"))
        summary[name] = stats
        fig = output.histograms({"correct": values[correct], "incorrect": values[~correct]},
                                f"map cosine similarity at step {step} ({measure})",
                                f"{name}: AUC correct > incorrect {stats['auc']:.3f}")
        summary["figures"] += output.save_figure(fig, out, f"{name}")
    summary["per_method"] = {m: _method_means([t for t in table if t["method"] == m]) for m in methods}
    output.write_json(out / "summary.json", summary)
    write_text(out / "README.txt", report(summary) + "\n")
    return summary


def _method_means(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method: how often objects are present and bound, and the mean map similarities (to compare methods)."""
    def mean(key: str, keep: Any = lambda t: True) -> float:
        v = [float(t[key]) for t in rows if keep(t) and t[key] is not None and not (isinstance(t[key], float) and math.isnan(t[key]))]
        return float(np.mean(v)) if v else math.nan

    return {"images": len(rows), "present": mean("present"), "bound": mean("bound", lambda t: t["present"]),
            "objects_cos": mean("objects_cos"), "bound_cos": mean("bound_cos"),
            "unbound_attribute_cos": mean("unbound_attribute_cos")}


def report(summary: dict[str, Any]) -> str:
    lines = [f"{summary['images']} images of {', '.join(summary['methods'])}, maps at step {summary['step']}; replayed "
             f"images identical to the stored ones: {summary['replay_exact']:.1%}, largest pixel difference "
             f"{summary['replay_max_diff']} of 255 (float rounding differs with the batch and thread count; guided "
             "updates can amplify it)"]
    for m, s in summary.get("per_method", {}).items():
        lines.append(f"{m}: all present {s['present']:.3f}, all bound (when present) {s['bound']:.3f}; mean map cosine: "
                     f"objects {s['objects_cos']:.3f}, colour-own noun {s['bound_cos']:.3f}, colour-other noun "
                     f"{s['unbound_attribute_cos']:.3f}")
    for name in ("presence", "binding"):
        s = summary.get(name, {})
        if "auc" not in s:
            lines.append(f"{name}: {s.get('note', 'not computed')}")
            continue
        lines.append(f"{name}: {s['measure']} correct {s['mean_correct']:.3f} (n={s['n_correct']}) vs incorrect "
                     f"{s['mean_incorrect']:.3f} (n={s['n_incorrect']}); AUC correct > incorrect "
                     f"{output.fmt_ci(s['auc'], s['auc_ci'])}, KS {s['ks']:.3f}; paper: {s['paper']}")
    return "\n".join(lines)
