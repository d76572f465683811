"""The report of a benchmark run: statistics, the TIFA element chart and image grids, as Markdown and HTML.

``make_report(run_dir)`` reads ``RUN_DIR/run.sqlite`` (see ``tsam_diffusion.bench.db``) and writes

- ``RUN_DIR/report.md``, with ``report_tifa_elements.png`` beside it (when the run has TIFA
  per-element counts) and the grid images linked from the run directory;
- ``RUN_DIR/report.html``, one self-contained file: the chart and the image thumbnails are embedded
  as base64, the CSS and a small script are inline, nothing is fetched from elsewhere.

Content, per suite and method:

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

The statistics are pure numpy functions (``bootstrap_ci``, ``paired_differences``,
``element_accuracy``) on *rows*: the image rows of ``RunDB.images()`` each with a ``"scores"``
dict ``{"metric/key": value}`` added (``join_scores``). matplotlib is imported lazily and drawn by
its Agg canvas (no pyplot). This module does not import torch.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..files import write_bytes, write_text
from .db import RunDB

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

BASELINE = "vanilla"
TIFA_SCORE = "tifa/score"
COUNT_PREFIXES = ("correct:", "questions:")
ELEMENTS_PNG = "report_tifa_elements.png"
GRID_PROMPTS = 12
MIN_PROMPTS = 10  # fewer prompts in a cell: its mean is shown without an interval
THUMB_PX = 256
MD_THUMB_PX = 160  # width of the grid images in the Markdown file
_METRIC_ORDER = ("clip", "clip-text", "tifa", "shapes")  # others follow alphabetically

Row = dict[str, Any]


# --------------------------------------------------------------------------- statistics


def bootstrap_ci(values: Iterable[float], *, n: int = 2000, alpha: float = 0.05, seed: int = 0,
                 groups: Sequence[Any] | None = None, min_units: int = 2) -> tuple[float, float, float]:
    """``(mean, lo, hi)``: the mean and the percentile-bootstrap ``1 - alpha`` interval of the mean.

    ``n`` resamples with replacement from ``np.random.default_rng(seed)``, so the result depends only
    on the values, ``n``, ``alpha`` and ``seed``. With ``groups`` (one label per value, e.g. the prompt
    of each image) whole groups are resampled (a cluster bootstrap): images of one prompt are not
    independent, so resampling images alone gives intervals that are too narrow when there are many
    seeds per prompt. Fewer than ``min_units`` resampled units (groups, else values) give no
    interval: ``lo`` and ``hi`` are NaN (a resample of one prompt is that prompt again, not an
    interval); no values give three NaNs.
    """
    arr = np.asarray(list(values), dtype=np.float64).ravel()
    if groups is not None:
        labels, inverse = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
        if inverse.size != arr.size:
            raise ValueError(f"got {arr.size} values but {inverse.size} group labels")
        sums, counts = np.bincount(inverse, weights=arr), np.bincount(inverse).astype(np.float64)
    else:
        sums, counts = arr, np.ones_like(arr)
    k = sums.size
    if k == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(arr.mean())
    if k < max(2, min_units) or n <= 0:
        return (mean, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = np.empty(n, dtype=np.float64)
    chunk = max(1, 2_000_000 // k)  # bounded memory for large suites (index matrix chunk x k)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        idx = rng.integers(0, k, size=(stop - start, k))
        means[start:stop] = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    # rounding in the resampled means must not put a bound outside the data
    lo, hi = float(max(lo, arr.min())), float(min(hi, arr.max()))
    return (mean, lo, hi)


def is_measure(name: str) -> bool:
    """Whether a score name ``metric/key`` is a measure (not a TIFA ``correct:``/``questions:`` count)."""
    _, _, key = name.partition("/")
    return not key.startswith(COUNT_PREFIXES)


def _measure_sort_key(name: str) -> tuple[int, str, str]:
    metric, _, key = name.partition("/")
    rank = _METRIC_ORDER.index(metric) if metric in _METRIC_ORDER else len(_METRIC_ORDER)
    return (rank, metric, key)


def join_scores(images: Sequence[Row], scores: Sequence[Row]) -> list[Row]:
    """The image rows, each with ``"scores": {"metric/key": value}`` (missing and non-finite values left out)."""
    by_job: dict[str, dict[str, float]] = {}
    for s in scores:
        value = s["value"]
        if value is None:
            continue
        value = float(value)
        if not math.isfinite(value):
            continue
        by_job.setdefault(s["job_id"], {})[f"{s['metric']}/{s['key']}"] = value
    return [{**img, "scores": by_job.get(img["job_id"], {})} for img in images]


def _value(row: Row, measure: str) -> float | None:
    return row.get("scores", {}).get(measure)


def _pair_key(row: Row) -> tuple[str, str, int]:
    return (row["suite"], row["prompt_id"], row["seed"])


def paired_differences(rows: Sequence[Row], measure: str, method: str, baseline: str = BASELINE) -> list[float]:
    """``method - baseline`` of ``measure`` for every (suite, prompt_id, seed) both have a value for.

    In the order of (suite, prompt_id, seed).
    """
    return [d for d, _ in _paired(rows, measure, method, baseline)]


def _paired(rows: Sequence[Row], measure: str, method: str, baseline: str) -> list[tuple[float, str]]:
    """``(difference, prompt_id)`` pairs of ``paired_differences``, in its order."""
    def index(name: str) -> dict[tuple[str, str, int], float]:
        out = {}
        for r in rows:
            if r["method"] == name:
                v = _value(r, measure)
                if v is not None:
                    out[_pair_key(r)] = v
        return out

    a, b = index(method), index(baseline)
    return [(a[k] - b[k], k[1]) for k in sorted(a.keys() & b.keys())]


def _num(x: float) -> int | float:
    return int(x) if float(x).is_integer() else float(x)


def element_accuracy(rows: Sequence[Row], method: str) -> dict[str, tuple[int | float, int | float, float]]:
    """``{element_type: (correct, total, accuracy)}`` of ``method``, from ``tifa/correct:<type>`` and
    ``tifa/questions:<type>`` summed over its images (accuracy NaN where total is 0), types sorted."""
    correct: dict[str, float] = {}
    total: dict[str, float] = {}
    for r in rows:
        if r["method"] != method:
            continue
        for name, v in r.get("scores", {}).items():
            metric, _, key = name.partition("/")
            if metric != "tifa":
                continue
            kind, sep, etype = key.partition(":")
            if not sep:
                continue
            if kind == "correct":
                correct[etype] = correct.get(etype, 0.0) + v
            elif kind == "questions":
                total[etype] = total.get(etype, 0.0) + v
    out = {}
    for etype in sorted(correct.keys() | total.keys()):
        c, t = correct.get(etype, 0.0), total.get(etype, 0.0)
        out[etype] = (_num(c), _num(t), c / t if t else math.nan)
    return out


# --------------------------------------------------------------------------- the report


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
    baseline: str = BASELINE
    ci_level: float = 0.95
    bootstrap_samples: int = 2000
    min_prompts: int = MIN_PROMPTS

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
                    ci_level=1 - alpha, bootstrap_samples=n_boot, min_prompts=min_prompts)

    def ci(values: Sequence[float], groups: Sequence[str]) -> tuple[float, float, float]:  # prompts resampled
        return bootstrap_ci(values, n=n_boot, alpha=alpha, seed=seed, groups=groups, min_units=min_prompts)

    for suite in suites:
        srows = [r for r in rows if r["suite"] == suite]
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
                    pairs = _paired(srows, measure, method, BASELINE)
                    diffs = [d for d, _ in pairs]
                    mean, lo, hi = ci(diffs, [g for _, g in pairs])
                    report.paired.append({"suite": suite, "method": method, "baseline": BASELINE,
                                          "measure": measure, "pairs": len(diffs),
                                          "mean": mean, "lo": lo, "hi": hi})
        report.grids.append({"suite": suite, "methods": smethods, "rows": _grid(srows, smethods, max_prompts)})
    return report


# --------------------------------------------------------------------------- chart


def element_chart_png(report: Report, suites: Sequence[str] | None = None) -> bytes | None:
    """Figure 7 style grouped bars (element types on x, one bar per method) as PNG bytes; one panel per
    suite (of ``suites``, default all) with TIFA element counts. None when there are none."""
    wanted = report.suites if suites is None else suites
    suites = [s for s in wanted if any(e["suite"] == s for e in report.elements)]
    if not suites:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = []
    for suite in suites:
        erows = [e for e in report.elements if e["suite"] == suite]
        types = sorted({e["element"] for e in erows})
        methods = [m for m in report.methods if any(e["method"] == m for e in erows)]
        panels.append((suite, types, methods, {(e["method"], e["element"]): e for e in erows}))
    widest = max(len(t) * max(len(m), 1) for _, t, m, _ in panels)
    width = min(20.0, max(7.0, 0.32 * widest + 2.5))
    fig = Figure(figsize=(width, 3.8 * len(panels)), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    colors = [f"C{i % 10}" for i in range(len(report.methods))]
    for ax, (suite, types, methods, cell) in zip(axes, panels):
        x = np.arange(len(types))
        bar_w = 0.8 / max(len(methods), 1)
        for j, method in enumerate(methods):
            acc = [100 * cell[(method, t)]["accuracy"] if (method, t) in cell else np.nan for t in types]
            acc = [0.0 if not np.isfinite(a) else a for a in acc]
            bars = ax.bar(x - 0.4 + bar_w * (j + 0.5), acc, bar_w, label=method,
                          color=colors[report.methods.index(method)])
            if len(types) * len(methods) <= 48:
                ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=1)
        ax.set_xticks(x)
        ax.set_xticklabels(types, rotation=30, ha="right")
        ax.set_ylim(0, 105)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"TIFA accuracy per element type: {suite}")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, facecolor="white")
    return buf.getvalue()


# --------------------------------------------------------------------------- formatting


def _f(x: float | None, digits: int = 4, signed: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _interval_text(row: Row, signed: bool = False) -> str:
    """``[lo, hi]``, or a note where the cell has too few prompts for an interval."""
    if not (math.isfinite(row["lo"]) and math.isfinite(row["hi"])):
        return "[no interval: too few prompts]"
    return f"[{_f(row['lo'], signed=signed)}, {_f(row['hi'], signed=signed)}]"


def _ci_text(row: Row, signed: bool = False) -> str:
    return f"{_f(row['mean'], signed=signed)} {_interval_text(row, signed)}"


def _significance(row: Row) -> int:
    """+1 / -1 when the CI lies above / below 0, else 0."""
    lo, hi = row["lo"], row["hi"]
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 0
    return 1 if lo > 0 else -1 if hi < 0 else 0


def _pct(acc: float) -> str:
    return "n/a" if not math.isfinite(acc) else f"{100 * acc:.1f}%"


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str)


def _md(text: Any) -> str:
    """Text for a Markdown table cell: HTML and Markdown specials escaped, one line."""
    s = html.escape(" ".join(str(text).split()), quote=False)
    for ch in "\\`*_[]|":
        s = s.replace(ch, "\\" + ch)
    return s


def _anchor(prefix: str, name: str) -> str:
    return prefix + "-" + "".join(c if c.isalnum() else "-" for c in name.lower())


def _suite_views(report: Report, suite: str) -> dict[str, Any]:
    """The report's rows of one suite, keyed for rendering."""
    counts = {c["method"]: c for c in report.counts if c["suite"] == suite}
    methods = list(counts)
    measures = {(m["method"], m["measure"]): m for m in report.measures if m["suite"] == suite}
    measure_names = [n for n in report.measure_names if any(k[1] == n for k in measures)]
    paired = {(p["method"], p["measure"]): p for p in report.paired if p["suite"] == suite}
    paired_methods = list(dict.fromkeys(p["method"] for p in report.paired if p["suite"] == suite))
    elements = {(e["method"], e["element"]): e for e in report.elements if e["suite"] == suite}
    element_types = sorted({k[1] for k in elements})
    sources = {(s["method"], s["source"]): s for s in report.sources if s["suite"] == suite}
    source_names = sorted({k[1] for k in sources})
    grid = next((g for g in report.grids if g["suite"] == suite), {"methods": [], "rows": []})
    return dict(counts=counts, methods=methods, measures=measures, measure_names=measure_names,
                paired=paired, paired_methods=paired_methods, elements=elements,
                element_types=element_types, sources=sources, source_names=source_names, grid=grid)


def _measure_cell_text(cell: Row | None, images: int) -> str:
    if cell is None:
        return "n/a"
    text = _ci_text(cell)
    return text if cell["n"] == images else f"{text} (n={cell['n']})"


# --------------------------------------------------------------------------- Markdown


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines + [""]


def _markdown(report: Report, md_dir: Path, chart_name: str | None) -> str:
    pct = f"{100 * report.ci_level:g}%"
    out = [f"# {_md(report.title)}", "",
           f"Run directory: `{report.run_dir}`  ",
           f"Model: `{report.model}`  ",
           f"Methods: {', '.join(_md(m) for m in report.methods)}  ",
           f"Suites: {', '.join(_md(s) for s in report.suites)}", "",
           f"Means with percentile-bootstrap {pct} intervals ({report.bootstrap_samples} resamples of the prompts) in brackets;"
           f" a mean over fewer than {report.min_prompts} prompts gets no interval."
           + (f" Paired differences are `method - {report.baseline}` over images of the same prompt and seed; "
              "**bold** where the interval excludes 0." if report.paired else ""), ""]
    for suite in report.suites:
        v = _suite_views(report, suite)
        out += [f"## Suite `{suite}`", "", "### Measures", ""]
        header = ["", *(_md(m) for m in v["methods"])]
        body = [["images", *(str(v["counts"][m]["images"]) for m in v["methods"])]]
        if any(v["counts"][m]["seconds"] is not None for m in v["methods"]):
            body.append(["seconds / image", *(_f(v["counts"][m]["seconds"], 2) for m in v["methods"])])
        for name in v["measure_names"]:
            body.append([f"`{name}`", *(_measure_cell_text(v["measures"].get((m, name)), v["counts"][m]["images"])
                                        for m in v["methods"])])
        out += _md_table(header, body)
        if v["paired_methods"]:
            out += [f"### Paired difference to `{report.baseline}`", ""]
            body = []
            for name in v["measure_names"]:
                cells = []
                for m in v["paired_methods"]:
                    p = v["paired"].get((m, name))
                    if p is None or p["pairs"] == 0:
                        cells.append("n/a")
                        continue
                    text = _ci_text(p, signed=True)
                    cells.append(f"{'**' + text + '**' if _significance(p) else text} (n={p['pairs']})")
                body.append([f"`{name}`", *cells])
            out += _md_table(["", *(_md(m) for m in v["paired_methods"])], body)
        if v["element_types"]:
            out += ["### TIFA accuracy per element type", ""]
            if chart_name:
                out += [f"![TIFA accuracy per element type]({chart_name})", ""]
            body = []
            for etype in v["element_types"]:
                cells = []
                for m in v["methods"]:
                    e = v["elements"].get((m, etype))
                    cells.append("n/a" if e is None else f"{_pct(e['accuracy'])} ({e['correct']}/{e['total']})")
                body.append([_md(etype), *cells])
            out += _md_table(["element", *(_md(m) for m in v["methods"])], body)
        if v["source_names"]:
            out += [f"### `{TIFA_SCORE}` per source", ""]
            body = [[_md(src), *("n/a" if (s := v["sources"].get((m, src))) is None else f"{_ci_text(s)} (n={s['n']})"
                                  for m in v["methods"])] for src in v["source_names"]]
            out += _md_table(["source", *(_md(m) for m in v["methods"])], body)
        grid = v["grid"]
        if grid["rows"]:
            out += ["### Images", "", "One row per prompt at the smallest seed every method has.", ""]
            body = []
            for row in grid["rows"]:
                cells = []
                for m in grid["methods"]:
                    rel = os.path.relpath(report.run_dir / row["images"][m], md_dir)
                    src = urllib.parse.quote(Path(rel).as_posix())
                    cells.append(f'<img src="{src}" width="{MD_THUMB_PX}" alt="{html.escape(m)}">')
                body.append([f"{_md(row['prompt'])} (seed {row['seed']})", *cells])
            out += _md_table(["prompt", *(_md(m) for m in grid["methods"])], body)
    out += ["## Configuration", "", "### Settings", "", "```json", _json(report.settings), "```", ""]
    for name, config in report.method_configs.items():
        out += [f"### Method `{name}`", "", "```json", _json(config), "```", ""]
    out += ["### Software versions", "", "```json", _json(report.versions), "```", ""]
    return "\n".join(out)


def write_markdown(report: Report, path: str | Path) -> Path:
    """Write the Markdown report to ``path``, and the element chart beside it as ``report_tifa_elements.png``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    png = element_chart_png(report)
    chart_name = None
    if png is not None:
        write_bytes(path.parent / ELEMENTS_PNG, png)
        chart_name = ELEMENTS_PNG
    return write_text(path, _markdown(report, path.parent, chart_name))


# --------------------------------------------------------------------------- HTML

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px auto;
       max-width: 1280px; padding: 0 16px; color: #1a1a1a; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 2px solid #ddd; padding-bottom: 4px; }
h3 { margin-top: 1.4em; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
tr:nth-child(even) td { background: #fafafa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.ci { color: #666; font-size: 12px; }
.pos { color: #0a6b2b; font-weight: 600; } .neg { color: #a3121d; font-weight: 600; }
table.grid td { background: #fff; padding: 4px; }
table.grid td.prompt { max-width: 240px; font-size: 13px; }
table.grid img { display: block; max-width: 256px; max-height: 256px; }
pre { background: #f6f6f6; border: 1px solid #ddd; padding: 8px; overflow-x: auto; font-size: 12px; }
.note { color: #555; font-size: 13px; } .missing { color: #a3121d; font-size: 12px; }
img.chart { max-width: 100%; border: 1px solid #eee; }
"""

# Sets data-images-loaded / data-images-total on <body> once everything has loaded (checked by tests
# in a headless browser; harmless otherwise).
_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok++; } }
  document.body.dataset.imagesLoaded = String(ok);
  document.body.dataset.imagesTotal = String(imgs.length);
});
"""


def _thumb_uri(path: Path, max_px: int = THUMB_PX) -> str | None:
    """A JPEG data URI of the image scaled to fit ``max_px``; None if it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((max_px, max_px), Image.LANCZOS)
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=88)
    except (OSError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _h(text: Any) -> str:
    return html.escape(str(text))


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> list[str]:
    """A table; ``header`` is text (escaped here), ``rows`` are already-built cell HTML (``<td>``...)."""
    attr = f' class="{cls}"' if cls else ""
    out = [f"<table{attr}>", "<thead><tr>" + "".join(f"<th>{_h(h)}</th>" for h in header) + "</tr></thead>", "<tbody>"]
    out += ["<tr>" + "".join(r) + "</tr>" for r in rows]
    return out + ["</tbody>", "</table>"]


def _ci_cell(cell: Row | None, signed: bool = False, n: int | None = None) -> str:
    if cell is None or (n is not None and n == 0):
        return '<td class="num">n/a</td>'
    cls = ""
    if signed:
        cls = {1: " pos", -1: " neg", 0: ""}[_significance(cell)]
    extra = f" n={n}" if n is not None else ""
    return (f'<td class="num{cls}">{_h(_f(cell["mean"], signed=signed))}<br>'
            f'<span class="ci">{_h(_interval_text(cell, signed))}{_h(extra)}</span></td>')


def _html(report: Report) -> str:
    pct = f"{100 * report.ci_level:g}%"
    body: list[str] = [f"<h1>{_h(report.title)}</h1>",
                       "<table>",
                       f"<tr><th>run directory</th><td>{_h(report.run_dir)}</td></tr>",
                       f"<tr><th>model</th><td>{_h(report.model)}</td></tr>",
                       f"<tr><th>methods</th><td>{_h(', '.join(report.methods))}</td></tr>",
                       f"<tr><th>suites</th><td>{_h(', '.join(report.suites))}</td></tr>",
                       "</table>",
                       f'<p class="note">Means with percentile-bootstrap {_h(pct)} intervals '
                       f"({report.bootstrap_samples} resamples of the prompts) below them; a mean over fewer "
                       f"than {report.min_prompts} prompts gets no interval."
                       + (f" Paired differences are <code>method - {_h(report.baseline)}</code> over images of "
                          "the same prompt and seed; green / red where the interval lies above / below 0."
                          if report.paired else "") + "</p>"]
    toc = ["<ul>"]
    sections: list[str] = []
    for suite in report.suites:
        v = _suite_views(report, suite)
        anchor = _anchor("suite", suite)
        toc.append(f'<li><a href="#{anchor}">{_h(suite)}</a></li>')
        s = [f'<h2 id="{anchor}">Suite {_h(suite)}</h2>', "<h3>Measures</h3>"]
        rows = [["<th>images</th>", *(f'<td class="num">{v["counts"][m]["images"]}</td>' for m in v["methods"])]]
        if any(v["counts"][m]["seconds"] is not None for m in v["methods"]):
            rows.append(["<th>seconds / image</th>",
                         *(f'<td class="num">{_h(_f(v["counts"][m]["seconds"], 2))}</td>' for m in v["methods"])])
        for name in v["measure_names"]:
            cells = []
            for m in v["methods"]:
                cell = v["measures"].get((m, name))
                n = cell["n"] if cell is not None and cell["n"] != v["counts"][m]["images"] else None
                cells.append(_ci_cell(cell, n=n))
            rows.append([f"<th>{_h(name)}</th>", *cells])
        s += _html_table(["", *v["methods"]], rows, "stats")
        if v["paired_methods"]:
            s.append(f"<h3>Paired difference to {_h(report.baseline)}</h3>")
            rows = []
            for name in v["measure_names"]:
                cells = []
                for m in v["paired_methods"]:
                    p = v["paired"].get((m, name))
                    cells.append(_ci_cell(p, signed=True, n=None if p is None else p["pairs"]))
                rows.append([f"<th>{_h(name)}</th>", *cells])
            s += _html_table(["", *v["paired_methods"]], rows, "paired")
        if v["element_types"]:
            s.append("<h3>TIFA accuracy per element type</h3>")
            png = element_chart_png(report, [suite])
            if png:
                uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
                s.append(f'<img class="chart" src="{uri}" alt="TIFA accuracy per element type">')
            rows = []
            for etype in v["element_types"]:
                cells = []
                for m in v["methods"]:
                    e = v["elements"].get((m, etype))
                    cells.append('<td class="num">n/a</td>' if e is None else
                                 f'<td class="num">{_h(_pct(e["accuracy"]))}<br>'
                                 f'<span class="ci">{_h(e["correct"])}/{_h(e["total"])}</span></td>')
                rows.append([f"<th>{_h(etype)}</th>", *cells])
            s += _html_table(["element", *v["methods"]], rows, "elements")
        if v["source_names"]:
            s.append(f"<h3>{_h(TIFA_SCORE)} per source</h3>")
            rows = []
            for src in v["source_names"]:
                cells = []
                for m in v["methods"]:
                    c = v["sources"].get((m, src))
                    cells.append(_ci_cell(c, n=None if c is None else c["n"]))
                rows.append([f"<th>{_h(src)}</th>", *cells])
            s += _html_table(["source", *v["methods"]], rows, "sources")
        grid = v["grid"]
        if grid["rows"]:
            s.append("<h3>Images</h3>")
            s.append('<p class="note">One row per prompt at the smallest seed every method has.</p>')
            rows = []
            for row in grid["rows"]:
                cells = [f'<td class="prompt">{_h(row["prompt"])}<br><span class="ci">{_h(row["prompt_id"])}, '
                         f'seed {_h(row["seed"])}</span></td>']
                for m in grid["methods"]:
                    rel = row["images"][m]
                    uri = _thumb_uri(report.run_dir / rel)
                    cells.append(f'<td><img src="{uri}" alt="{_h(m)}: {_h(row["prompt"])}"></td>' if uri else
                                 f'<td><span class="missing">missing: {_h(rel)}</span></td>')
                rows.append(cells)
            s += _html_table(["prompt", *grid["methods"]], rows, "grid")
        sections += s
    toc.append('<li><a href="#configuration">Configuration</a></li>')
    toc.append("</ul>")
    conf = ['<h2 id="configuration">Configuration</h2>', "<h3>Settings</h3>", f"<pre>{_h(_json(report.settings))}</pre>"]
    for name, config in report.method_configs.items():
        conf += [f"<h3>Method {_h(name)}</h3>", f"<pre>{_h(_json(config))}</pre>"]
    conf += ["<h3>Software versions</h3>", f"<pre>{_h(_json(report.versions))}</pre>"]
    return "\n".join(["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
                      '<meta name="viewport" content="width=device-width, initial-scale=1">',
                      f"<title>{_h(report.title)}</title>", f"<style>{_CSS}</style>",
                      f"<script>{_SCRIPT}</script>", "</head>", "<body>",
                      *body, *toc, *sections, *conf, "</body>", "</html>", ""])


def write_html(report: Report, path: str | Path) -> Path:
    """Write the self-contained HTML report (chart and thumbnails embedded) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text(path, _html(report))


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
