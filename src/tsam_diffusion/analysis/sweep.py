"""``tsam analyze sweep``: a metric over a benchmark run's method overrides (the paper's Tables B and C).

A run made with e.g. ``--methods "vanilla,tsam[alpha=10;gamma=2],tsam[alpha=10;gamma=4],..."``
gives one row per method: its overrides, the metric's mean with a prompt-resampled 95% interval,
and the paired difference from the baseline (same prompt and seed) with its interval. When the
overrides vary exactly two parameters, the means also form a grid (rows: the first, columns: the
second), plotted as one line per value of the second.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ..bench.db import RunDB
from ..bench.stats import BASELINE, bootstrap_ci, join_scores, paired_by_prompt
from ..files import write_text
from . import output

_OVERRIDES = re.compile(r"\[(.*)\]$")


def overrides(method: str) -> dict[str, str]:
    """``{"alpha": "10", "gamma": "4"}`` of ``tsam:mini[alpha=10;gamma=4]``; ``{}`` without overrides."""
    m = _OVERRIDES.search(method)
    if not m:
        return {}
    return dict(part.split("=", 1) for part in m.group(1).split(";") if "=" in part)


def _key(value: str) -> tuple[int, float | str]:
    try:
        return (0, float(value))
    except ValueError:
        return (1, value)


def sweep(run_dir: Path, out: Path, *, metric: str, baseline: str = BASELINE, bootstrap: int = 2000) -> dict[str, Any]:
    """The table (and grid, when two parameters vary) of ``metric`` (``shapes/whole``, ``tifa/score``...)."""
    db = RunDB(run_dir, create=False)
    rows = join_scores(db.images(), db.scores())
    measures = sorted({k for r in rows for k in r["scores"]})
    if metric not in measures:
        raise ValueError(f"the run has no scores named {metric!r}; it has: {', '.join(measures) or 'none (score it first)'}")
    methods = sorted({r["method"] for r in rows})
    table = []
    for method in methods:
        vals = [(r["scores"][metric], r["prompt_id"]) for r in rows if r["method"] == method and metric in r["scores"]]
        mean, lo, hi = bootstrap_ci([v for v, _ in vals], groups=[g for _, g in vals], n=bootstrap)
        entry: dict[str, Any] = {"method": method, **{f"param:{k}": v for k, v in overrides(method).items()},
                                 "n": len(vals), "mean": mean, "ci_lo": lo, "ci_hi": hi}
        if method != baseline and baseline in methods:
            diffs = paired_by_prompt(rows, metric, method, baseline)
            d, dlo, dhi = bootstrap_ci([x for x, _ in diffs], groups=[g for _, g in diffs], n=bootstrap)
            entry.update(diff=d, diff_lo=dlo, diff_hi=dhi)
        table.append(entry)
    out.mkdir(parents=True, exist_ok=True)
    output.write_csv(out / "sweep.csv", table)
    varied = [k for k in dict.fromkeys(k for e in table for k in e if k.startswith("param:"))
              if len({e.get(k) for e in table if any(p.startswith("param:") for p in e)}) > 1]
    summary: dict[str, Any] = {"run": str(run_dir), "metric": metric, "baseline": baseline, "table": table,
                               "varied": [v.removeprefix("param:") for v in varied], "figures": []}
    lines = [f"# {metric} over the methods of {run_dir}", "",
             f"Mean with a prompt-resampled 95% interval; difference from `{baseline}` on the same prompts and seeds.", "",
             "| method | n | mean | difference |", "|---|---|---|---|"]
    for e in table:
        diff = f"{e['diff']:+.3f} [{e['diff_lo']:+.3f}, {e['diff_hi']:+.3f}]" if "diff" in e else "-"
        lines.append(f"| `{e['method']}` | {e['n']} | {e['mean']:.3f} [{e['ci_lo']:.3f}, {e['ci_hi']:.3f}] | {diff} |")
    if len(varied) in (1, 2):
        a, b = varied[0], (varied[1] if len(varied) == 2 else None)
        cells = {(e[a], e.get(b, "") if b else ""): e for e in table if a in e and (b is None or b in e)}
        ra = sorted({x for x, _ in cells}, key=_key)
        rb = sorted({y for _, y in cells}, key=_key)
        if b:
            summary["grid"] = {"rows": a.removeprefix("param:"), "columns": b.removeprefix("param:"), "row_values": ra,
                               "column_values": rb,
                               "mean": [[cells[(x, y)]["mean"] if (x, y) in cells else None for y in rb] for x in ra]}
            lines += ["", f"| {a.removeprefix('param:')} \\ {b.removeprefix('param:')} | " + " | ".join(rb) + " |",
                      "|---|" + "---|" * len(rb)]
            lines += [f"| {x} | " + " | ".join(f"{cells[(x, y)]['mean']:.3f}" if (x, y) in cells else "-" for y in rb)
                      + " |" for x in ra]
        summary["figures"] += output.save_figure(_plot(cells, ra, rb, a, b, table, baseline, metric), out, "sweep")
    write_text(out / "sweep.md", "\n".join(lines) + "\n")
    output.write_json(out / "summary.json", summary)
    summary["text"] = "\n".join(lines)
    return summary


def _plot(cells: dict, ra: list[str], rb: list[str], a: str, b: str | None, table: list[dict[str, Any]], baseline: str,
          metric: str) -> Any:
    """The metric against the first parameter, one line per value of the second, the baseline dashed."""
    fig, ax = output.figure()
    numeric = all(_key(x)[0] == 0 for x in ra)
    for y in rb:
        xs = [x for x in ra if (x, y) in cells]
        es = [cells[(x, y)] for x in xs]
        pos = np.array([float(x) for x in xs]) if numeric else np.array([ra.index(x) for x in xs], dtype=float)
        ax.errorbar(pos, [e["mean"] for e in es], yerr=[[e["mean"] - e["ci_lo"] for e in es], [e["ci_hi"] - e["mean"] for e in es]],
                    marker="o", capsize=3, label=f"{b.removeprefix('param:')}={y}" if b else metric)
    if not numeric:
        ax.set_xticks(range(len(ra)), ra)
    elif all(float(x) > 0 for x in ra) and max(float(x) for x in ra) / min(float(x) for x in ra) > 20:
        ax.set_xscale("log")
    base = next((e for e in table if e["method"] == baseline), None)
    if base is not None:
        ax.axhline(base["mean"], color="grey", linestyle="--", label=baseline)
    ax.set_xlabel(a.removeprefix("param:"))
    ax.set_ylabel(metric)
    ax.legend(fontsize=8)
    return fig
