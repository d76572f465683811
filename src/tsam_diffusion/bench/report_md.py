"""The Markdown report (``report.md``) and the element chart beside it; see ``tsam_diffusion.bench.report``."""
from __future__ import annotations

import html
import os
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..files import write_bytes, write_text
from .report_text import (
    TABLE1_HEADING,
    vqa_note,
    TABLE2_HEADING,
    TABLE2_MEASURES,
    Cell,
    _ci_text,
    _f,
    _json,
    _md,
    _measure_cell_text,
    _pct,
    _significance,
    _suite_views,
    element_chart_png,
    paper_table1,
    paper_table2,
)
from .stats import TIFA_SCORE

if TYPE_CHECKING:
    from .report import Report

__all__ = ["ELEMENTS_PNG", "MD_THUMB_PX", "write_markdown"]

ELEMENTS_PNG = "report_tifa_elements.png"
MD_THUMB_PX = 160  # width of the grid images in the Markdown file


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines + [""]


def _cell_md(cell: Cell) -> str:
    if cell.kind in ("label", "text"):
        return _md(cell.text)
    if cell.row is None:
        return "n/a"
    if cell.kind == "pct":
        return f"{_pct(cell.row['accuracy'])} ({cell.row['correct']}/{cell.row['total']})"
    text = _ci_text(cell.row, signed=cell.kind == "diff")
    if cell.kind == "diff" and _significance(cell.row):
        text = f"**{text}**"
    return text if cell.n is None else f"{text} (n={cell.n})"


def _paper_md(report: Report, suite: str) -> list[str]:
    """The paper's Table 2 and Table 1 layouts of ``suite`` (each only when it has their measures)."""
    out: list[str] = []
    table = paper_table2(report, suite)
    if table is not None:
        names = dict(TABLE2_MEASURES)
        note = "; ".join(f"{names[m]}: `{m}`" for m in table["measures"])
        if any(c.kind == "diff" for r in table["rows"] for c in r):
            note += (f"; Δ: paired difference `method - {report.baseline}` over the same prompts and seeds, "
                     "**bold** where its interval excludes 0")
        out += [f"### {_md(TABLE2_HEADING)}", "", f"Methods in the order of the paper's tables. {note}.", ""]
        out += _md_table([_md(h) for h in table["header"]], [[_cell_md(c) for c in r] for r in table["rows"]])
    table = paper_table1(report, suite)
    if table is not None:
        out += [f"### {_md(TABLE1_HEADING)}", ""]
        if (note := vqa_note(report, suite)) is not None:
            out += [_md(note) + ".", ""]
        out += _md_table([_md(h) for h in table["header"]], [[_cell_md(c) for c in r] for r in table["rows"]])
    return out


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
        out += [f"## Suite `{suite}`", ""]
        out += _paper_md(report, suite)
        out += ["### Measures", ""]
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
    if report.study is not None:
        from ..study.results import markdown as study_markdown

        out += ["## Human study", "", study_markdown(report.study), ""]
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
