"""The report of a benchmark run: statistics, the TIFA element chart and image grids, as Markdown and HTML.

``make_report(run_dir)`` reads ``RUN_DIR/run.sqlite`` (see ``tsam_diffusion.bench.db``) and writes

- ``RUN_DIR/report.md``, with ``report_tifa_elements.png`` beside it (when the run has TIFA
  per-element counts) and the grid images linked from the run directory;
- ``RUN_DIR/report.html``, one self-contained file: the chart and the image thumbnails are embedded
  as base64, the CSS and a small script are inline, nothing is fetched from elsewhere.

Content, per suite and method:

- at the top of each suite, the T-SAM paper's own layouts: its Table 2 (CLIP image-text similarity
  with the full prompt and with the least similar object, and the BLIP-caption text-text
  similarity, each with the paired difference to ``vanilla``) and its Table 1 (TIFA score and
  accuracy per element type), methods in the paper's order (no guidance, LB (SynGen), CONFORM,
  A&E, T-SAM) with the external information each needs;
- the number of images and the mean of every *measure* with a percentile-bootstrap 95% CI that
  resamples prompts (all images of a prompt together: its seeds are not independent samples). A
  measure is ``metric/key`` for every score key that is not a TIFA count (``correct:<type>`` /
  ``questions:<type>``), e.g. ``clip/full``, ``clip/min``, ``clip-text/score``, ``tifa/score``;
  metrics added later appear without changes here;
- the paired difference ``method - vanilla`` over the images of the same prompt and seed, with its
  CI and the number of pairs (left out when the suite has no ``vanilla`` images);
- TIFA question accuracy per element type (``tifa/correct:<type>`` summed over images divided by
  ``tifa/questions:<type>`` summed, as in Figure 7 of the T-SAM paper) and the TIFA score per prompt
  source (``prompt_meta["source"]``: coco, partiprompt, paintskill, drawbench) when present;
- image grids like the paper's Figures 8-9: one row per prompt, one column per method, at the
  smallest seed that every method has for that prompt, at most ``max_prompts`` prompts per suite;
- the run's settings, each method's configuration, the model and the software versions.

Where it is: the statistics are pure numpy functions in ``tsam_diffusion.bench.stats``
(``bootstrap_ci``, ``paired_differences``, ``element_accuracy``) on *rows*: the image rows of
``RunDB.images()`` each with a ``"scores"`` dict ``{"metric/key": value}`` added (``join_scores``).
This module computes the tables (``build_report``); ``report_text`` holds what Markdown and HTML
share (number formats, the element chart, the paper's tables), ``report_md`` and ``report_html``
write the two files. matplotlib is imported lazily and drawn by its Agg canvas (no pyplot). None of
these modules imports torch. Every name of ``__all__`` is importable from here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .db import RunDB
from .report_html import THUMB_PX, write_html  # noqa: F401  (THUMB_PX: re-exported)
from .report_md import ELEMENTS_PNG, MD_THUMB_PX, write_markdown  # noqa: F401  (MD_THUMB_PX: re-exported)
from .report_text import element_chart_png
from .stats import (
    BASELINE,
    COUNT_PREFIXES,  # noqa: F401  (re-exported)
    TIFA_SCORE,
    Row,
    _measure_sort_key,
    paired_by_prompt,
    _value,
    bootstrap_ci,
    element_accuracy,
    is_measure,
    join_scores,
    paired_differences,
    vqa_models,
)

__all__ = [
    "BASELINE",
    "ELEMENTS_PNG",
    "Report",
    "bootstrap_ci",
    "build_report",
    "element_accuracy",
    "element_chart_png",
    "is_measure",
    "join_scores",
    "make_report",
    "paired_differences",
    "write_html",
    "write_markdown",
]

# also importable from here: COUNT_PREFIXES, MD_THUMB_PX, Row, THUMB_PX, TIFA_SCORE (their modules own them)
GRID_PROMPTS = 12
MIN_PROMPTS = 10  # fewer prompts in a cell: its mean is shown without an interval


@dataclass
class Report:
    """Everything the report shows; tables are plain lists of dicts (long form).

    - ``counts``: ``{suite, method, images, seconds, updates}`` (means per image, None if unknown)
    - ``measures``: ``{suite, method, measure, n, mean, lo, hi}``
    - ``paired``: ``{suite, method, baseline, measure, pairs, mean, lo, hi}`` (mean of method - baseline)
    - ``elements``: ``{suite, method, element, correct, total, accuracy}``
    - ``sources``: ``{suite, method, source, n, mean, lo, hi}`` (``tifa/score``)
    - ``grids``: ``{suite, methods, rows: [{prompt_id, prompt, seed, images: {method: path}}]}``,
      image paths relative to ``run_dir``
    """

    run_dir: Path
    settings: dict[str, Any]
    method_configs: dict[str, dict[str, Any]]
    model: str | None
    versions: dict[str, Any]
    suites: list[str]
    methods: list[str]
    measure_names: list[str]
    counts: list[Row] = field(default_factory=list)
    measures: list[Row] = field(default_factory=list)
    paired: list[Row] = field(default_factory=list)
    elements: list[Row] = field(default_factory=list)
    sources: list[Row] = field(default_factory=list)
    grids: list[Row] = field(default_factory=list)
    vqa: dict[str, list[str]] = field(default_factory=dict)  # suite -> the VQA models that answered its TIFA questions
    baseline: str = BASELINE
    ci_level: float = 0.95
    bootstrap_samples: int = 2000
    min_prompts: int = MIN_PROMPTS
    study: dict[str, Any] | None = None  # ``tsam study``'s results when the run holds a study

    @property
    def title(self) -> str:
        return f"Benchmark report: {self.run_dir.name}"


def _mean_or_none(values: Iterable[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _grid(rows: Sequence[Row], methods: Sequence[str], max_prompts: int) -> list[Row]:
    """Up to ``max_prompts`` prompts (first-appearance order) that all ``methods`` have at a common seed."""
    prompts: dict[str, Row] = {}
    for r in rows:
        p = prompts.setdefault(r["prompt_id"], {"prompt": r["prompt"], "by_method": {}})
        p["by_method"].setdefault(r["method"], {})[r["seed"]] = r["image"]
    out = []
    for pid, p in prompts.items():
        if len(out) >= max_prompts:
            break
        seed_sets = [set(p["by_method"].get(m, {})) for m in methods]
        common = set.intersection(*seed_sets) if seed_sets else set()
        if not common:
            continue
        seed = min(common)
        out.append({"prompt_id": pid, "prompt": p["prompt"], "seed": seed,
                    "images": {m: p["by_method"][m][seed] for m in methods}})
    return out


def build_report(run_dir: str | Path, *, max_prompts: int = GRID_PROMPTS, n_boot: int = 2000,
                 alpha: float = 0.05, seed: int = 0, min_prompts: int = MIN_PROMPTS) -> Report:
    """Read ``RUN_DIR/run.sqlite`` and compute the report's tables.

    Intervals resample prompts; a mean over fewer than ``min_prompts`` prompts gets none (NaN bounds).

    Raises ``BenchError`` when there is no usable run database, ``ValueError`` when it has no images.
    """
    run_dir = Path(run_dir)
    db = RunDB(run_dir, create=False)
    images = db.images()
    if not images:
        raise ValueError(f"the run in {run_dir} has no images yet; generate some before making a report")
    rows = join_scores(images, db.scores())
    configs = db.methods()

    present = list(dict.fromkeys(r["method"] for r in rows))
    methods = [m for m in configs if m in present] + [m for m in present if m not in configs]
    suites = list(dict.fromkeys(r["suite"] for r in rows))
    measure_names = sorted({k for r in rows for k in r["scores"] if is_measure(k)}, key=_measure_sort_key)

    report = Report(run_dir=run_dir, settings=db.settings(), method_configs=configs,
                    model=images[0].get("model"), versions=images[0].get("versions") or {},
                    suites=suites, methods=methods, measure_names=measure_names,
                    ci_level=1 - alpha, bootstrap_samples=n_boot, min_prompts=min_prompts, study=_study(run_dir))

    def ci(values: Sequence[float], groups: Sequence[str]) -> tuple[float, float, float]:  # prompts resampled
        return bootstrap_ci(values, n=n_boot, alpha=alpha, seed=seed, groups=groups, min_units=min_prompts)

    for suite in suites:
        srows = [r for r in rows if r["suite"] == suite]
        report.vqa[suite] = vqa_models(srows)
        smethods = [m for m in methods if any(r["method"] == m for r in srows)]
        suite_measures = [m for m in measure_names if any(m in r["scores"] for r in srows)]
        for method in smethods:
            mrows = [r for r in srows if r["method"] == method]
            report.counts.append({"suite": suite, "method": method, "images": len(mrows),
                                  "seconds": _mean_or_none(r.get("seconds") for r in mrows),
                                  "updates": _mean_or_none(r.get("updates") for r in mrows)})
            for measure in suite_measures:
                scored = [(v, r["prompt_id"]) for r in mrows if (v := _value(r, measure)) is not None]
                vals = [v for v, _ in scored]
                mean, lo, hi = ci(vals, [g for _, g in scored])
                report.measures.append({"suite": suite, "method": method, "measure": measure,
                                        "n": len(vals), "mean": mean, "lo": lo, "hi": hi})
            for etype, (c, t, acc) in element_accuracy(mrows, method).items():
                report.elements.append({"suite": suite, "method": method, "element": etype,
                                        "correct": c, "total": t, "accuracy": acc})
            by_source: dict[str, list[tuple[float, str]]] = {}
            for r in mrows:
                source = (r.get("prompt_meta") or {}).get("source")
                v = _value(r, TIFA_SCORE)
                if source is not None and v is not None:
                    by_source.setdefault(str(source), []).append((v, r["prompt_id"]))
            for source in sorted(by_source):
                mean, lo, hi = ci(*zip(*by_source[source]))
                report.sources.append({"suite": suite, "method": method, "source": source,
                                       "n": len(by_source[source]), "mean": mean, "lo": lo, "hi": hi})
        if BASELINE in smethods:
            for method in smethods:
                if method == BASELINE:
                    continue
                for measure in suite_measures:
                    pairs = paired_by_prompt(srows, measure, method, BASELINE)
                    diffs = [d for d, _ in pairs]
                    mean, lo, hi = ci(diffs, [g for _, g in pairs])
                    report.paired.append({"suite": suite, "method": method, "baseline": BASELINE,
                                          "measure": measure, "pairs": len(diffs),
                                          "mean": mean, "lo": lo, "hi": hi})
        report.grids.append({"suite": suite, "methods": smethods, "rows": _grid(srows, smethods, max_prompts)})
    return report


def _study(run_dir: str | Path) -> dict[str, Any] | None:
    """The human study's results (``tsam study``), or None when the run has none."""
    from ..study.results import study_results
    from ..study.store import StudyError, StudyStore

    try:
        return study_results(StudyStore(run_dir))
    except StudyError:
        return None


def make_report(run_dir: str | Path, out_html: str | Path | None = None, *,
                max_prompts: int = GRID_PROMPTS, min_prompts: int = MIN_PROMPTS) -> tuple[Path, Path]:
    """Build the report of ``run_dir`` and write ``report.md`` and ``report.html`` there (or ``out_html``
    and its ``.md`` sibling). Returns ``(md_path, html_path)``."""
    report = build_report(run_dir, max_prompts=max_prompts, min_prompts=min_prompts)
    html_path = Path(out_html) if out_html is not None else Path(run_dir) / "report.html"
    md_path = html_path.with_suffix(".md")
    write_markdown(report, md_path)
    write_html(report, html_path)
    return md_path, html_path
