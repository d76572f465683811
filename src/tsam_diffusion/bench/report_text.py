"""What the Markdown and the HTML report share: number and interval formats, escaping, a suite's rows
keyed for rendering (``_suite_views``), the TIFA element chart (``element_chart_png``) and the T-SAM
paper's table layouts (``paper_methods``, ``paper_table2``, ``paper_table1``).

The paper's tables are built here as rows of format-free cells (``Cell``) that ``report_md`` and
``report_html`` each render. A ``Report`` (``tsam_diffusion.bench.report``) is only read here, never
imported at run time.
"""
from __future__ import annotations

import html
import io
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .stats import BASELINE, TIFA_SCORE, Row

if TYPE_CHECKING:
    from .report import Report


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


# --------------------------------------------------------------------------- the paper's tables

# (family, label, external information the method needs), in the order of the T-SAM paper's tables
PAPER_FAMILIES = (
    (BASELINE, "no guidance", "none"),
    ("syngen", "LB (SynGen)", "parser"),
    ("conform", "CONFORM", "token groups"),
    ("attend-excite", "A&E", "object tokens"),
    ("tsam", "T-SAM", "none"),
)
# (measure, column heading) of Table 2
TABLE2_MEASURES = (
    ("clip/full", "CLIP image-text (full prompt)"),
    ("clip/min", "CLIP image-text (minimum object)"),
    ("clip-text/score", "text-text (BLIP caption)"),
)
TABLE2_HEADING = "The paper's comparison (Table 2 layout)"
TABLE1_HEADING = "TIFA by element type (Table 1 layout)"


@dataclass(frozen=True)
class Cell:
    """A cell of the paper's tables, rendered by ``report_md`` and ``report_html``.

    ``kind``: ``"label"`` (a method's label, ``text``), ``"text"``, ``"mean"`` (a ``report.measures``
    row: mean and interval, with ``n`` images when not all of the method's were scored), ``"diff"``
    (a ``report.paired`` row: signed, marked where its interval excludes 0) or ``"pct"`` (a
    ``report.elements`` row: accuracy and counts). ``row`` None: no value (n/a).
    """

    kind: str
    text: str = ""
    row: Row | None = None
    n: int | None = None


def method_family(name: str, config: Any) -> str:
    """The family of a run's method from its stored configuration (``bench.run``): ``"vanilla"`` for
    ``{"tsam": None}``, ``"tsam"`` for ``{"tsam": {...}}``, the guidance's ``"method"`` for
    ``{"guidance": {...}}``; else the method name up to its first ``:`` or ``[``."""
    if isinstance(config, dict):
        if "tsam" in config:
            return BASELINE if config["tsam"] is None else "tsam"
        if "guidance" in config:
            guidance = config["guidance"]
            if guidance is None:
                return BASELINE
            if isinstance(guidance, dict) and guidance.get("method"):
                return str(guidance["method"])
    return name.split(":", 1)[0].split("[", 1)[0]


def paper_methods(report: Report, methods: Sequence[str]) -> list[dict[str, str]]:
    """``methods`` in the order of the paper's tables (no guidance, LB (SynGen), CONFORM, A&E, T-SAM,
    then unknown families; the given order within a family), each ``{method, family, label, external}``.

    The label is the family's, followed by the run's method name in brackets where that differs from
    the family name (``T-SAM (tsam:sd-ae)``); an unknown family is labelled by the method name."""
    known = {family: (rank, label, external) for rank, (family, label, external) in enumerate(PAPER_FAMILIES)}
    out = []
    for name in methods:
        family = method_family(name, report.method_configs.get(name))
        rank, label, external = known.get(family, (len(PAPER_FAMILIES), name, "n/a"))
        if family in known and name != family:
            label = f"{label} ({name})"
        out.append((rank, {"method": name, "family": family, "label": label, "external": external}))
    return [m for _, m in sorted(out, key=lambda x: x[0])]


def paper_table2(report: Report, suite: str) -> dict[str, Any] | None:
    """Table 2 of the paper for ``suite``: per method its external information, then per measure of
    ``TABLE2_MEASURES`` present the mean with its interval and (when the suite has paired
    differences) the difference to the baseline. ``{header, rows, measures}``; None without those measures."""
    v = _suite_views(report, suite)
    present = [(m, h) for m, h in TABLE2_MEASURES if m in v["measure_names"]]
    if not present:
        return None
    paired = bool(v["paired_methods"])
    header = ["method", "external information"]
    for _, heading in present:
        header += [heading, f"Δ {heading}"] if paired else [heading]
    rows = []
    for pm in paper_methods(report, v["methods"]):
        method = pm["method"]
        cells = [Cell("label", pm["label"]), Cell("text", pm["external"])]
        for measure, _ in present:
            cell = v["measures"].get((method, measure))
            n = cell["n"] if cell is not None and cell["n"] != v["counts"][method]["images"] else None
            cells.append(Cell("mean", row=cell, n=n))
            if paired:
                p = v["paired"].get((method, measure))
                cells.append(Cell("text", "baseline") if method == report.baseline else
                             Cell("diff", row=p if p is not None and p["pairs"] else None))
        rows.append(cells)
    return {"header": header, "rows": rows, "measures": [m for m, _ in present]}


def paper_table1(report: Report, suite: str) -> dict[str, Any] | None:
    """Table 1 of the paper for ``suite``: per method the TIFA score (when scored) with its interval,
    then the accuracy per element type. ``{header, rows}``; None when the suite has no element counts."""
    v = _suite_views(report, suite)
    if not v["element_types"]:
        return None
    score = TIFA_SCORE in v["measure_names"]
    header = ["method", *(["TIFA score"] if score else []), *v["element_types"]]
    rows = []
    for pm in paper_methods(report, v["methods"]):
        method = pm["method"]
        cells = [Cell("label", pm["label"])]
        if score:
            cell = v["measures"].get((method, TIFA_SCORE))
            n = cell["n"] if cell is not None and cell["n"] != v["counts"][method]["images"] else None
            cells.append(Cell("mean", row=cell, n=n))
        cells += [Cell("pct", row=v["elements"].get((method, etype))) for etype in v["element_types"]]
        rows.append(cells)
    return {"header": header, "rows": rows}


def vqa_note(report: Report, suite: str) -> str | None:
    """Which VQA model answered the suite's TIFA questions (and a warning when a run mixes them)."""
    models = report.vqa.get(suite) or []
    if not models:
        return None
    names = {"mplug": "mPLUG-large (TIFA's own model, as the paper)", "blip": "BLIP VQA (not comparable with the paper's numbers)"}
    text = "TIFA questions answered by " + ", ".join(names.get(m, m) for m in models)
    return text + (": WARNING, this run mixes VQA models; score it again with one" if len(models) > 1 else "")
