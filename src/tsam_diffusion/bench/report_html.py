"""The HTML report (``report.html``): one self-contained page with the chart and the image thumbnails
embedded as base64 and the CSS and a small script inline; see ``tsam_diffusion.bench.report``."""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..files import write_text
from .report_text import (
    TABLE1_HEADING,
    vqa_note,
    TABLE2_HEADING,
    TABLE2_MEASURES,
    Cell,
    _anchor,
    _f,
    _interval_text,
    _json,
    _pct,
    _significance,
    _suite_views,
    element_chart_png,
    paper_table1,
    paper_table2,
)
from .stats import TIFA_SCORE, Row

if TYPE_CHECKING:
    from .report import Report

__all__ = ["THUMB_PX", "write_html"]

THUMB_PX = 256

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


def _cell_html(cell: Cell) -> str:
    if cell.kind == "label":
        return f"<th>{_h(cell.text)}</th>"
    if cell.kind == "text":
        return f"<td>{_h(cell.text)}</td>"
    if cell.kind == "pct":
        e = cell.row
        return ('<td class="num">n/a</td>' if e is None else
                f'<td class="num">{_h(_pct(e["accuracy"]))}<br><span class="ci">{_h(e["correct"])}/{_h(e["total"])}</span></td>')
    return _ci_cell(cell.row, signed=cell.kind == "diff", n=cell.n)


def _paper_html(report: Report, suite: str) -> list[str]:
    """The paper's Table 2 and Table 1 layouts of ``suite`` (each only when it has their measures)."""
    out: list[str] = []
    table = paper_table2(report, suite)
    if table is not None:
        names = dict(TABLE2_MEASURES)
        note = "; ".join(f"{_h(names[m])}: <code>{_h(m)}</code>" for m in table["measures"])
        if any(c.kind == "diff" for r in table["rows"] for c in r):
            note += (f"; &Delta;: paired difference <code>method - {_h(report.baseline)}</code> over the same "
                     "prompts and seeds, green / red where its interval lies above / below 0")
        out += [f"<h3>{_h(TABLE2_HEADING)}</h3>",
                f'<p class="note">Methods in the order of the paper\'s tables. {note}.</p>']
        out += _html_table(table["header"], [[_cell_html(c) for c in r] for r in table["rows"]], "paper-table2")
    table = paper_table1(report, suite)
    if table is not None:
        out.append(f"<h3>{_h(TABLE1_HEADING)}</h3>")
        if (note := vqa_note(report, suite)) is not None:
            out.append(f'<p class="note">{_h(note)}.</p>')
        out += _html_table(table["header"], [[_cell_html(c) for c in r] for r in table["rows"]], "paper-table1")
    return out


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
        s = [f'<h2 id="{anchor}">Suite {_h(suite)}</h2>', *_paper_html(report, suite), "<h3>Measures</h3>"]
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
    if report.study is not None:
        from ..study.results import table_rows

        toc.append('<li><a href="#study">Human study</a></li>')
        st = report.study
        sections += ['<h2 id="study">Human study</h2>',
                     f'<p class="note">{st["participants"]} participants, {st["answers"]} answers; {len(st["flagged"])} '
                     "flagged by an attention check. Win / lose / tie from the first method's side, 95% intervals "
                     "resampling participants and prompts.</p>"]
        for name, rows in st["tables"].items():
            header, cells = table_rows(rows)
            sections += [f"<h3>{_h(name)}</h3>", *_html_table(header, [[_h(c) for c in r] for r in cells])]
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
