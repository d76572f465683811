"""What every ``tsam analyze`` command writes: figures (PNG and SVG), raw values (CSV), a JSON summary."""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..files import write_bytes, write_text

_COLOURS = {"bound": "#1f77b4", "unbound-objects": "#d62728", "unbound-attribute": "#ff7f0e", "correct": "#2ca02c",
            "incorrect": "#d62728", "sink": "#9467bd", "other": "#7f7f7f"}


def figure(width: float = 5.0, height: float = 3.6) -> tuple[Any, Any]:
    """A fresh matplotlib figure and axes (Agg backend: no display needed)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    return fig, fig.add_subplot(1, 1, 1)


def save_figure(fig: Any, out: Path, stem: str) -> list[str]:
    """``stem.png`` and ``stem.svg`` in ``out``; returns their names."""
    fig.tight_layout()
    names = []
    for ext in ("png", "svg"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext)
        write_bytes(out / f"{stem}.{ext}", buf.getvalue())
        names.append(f"{stem}.{ext}")
    return names


def histograms(groups: dict[str, Sequence[float]], xlabel: str, title: str, *, log_x: bool = False) -> Any:
    """Overlaid density histograms, one per label, on shared bins."""
    fig, ax = figure()
    data = {k: np.asarray(v, dtype=np.float64) for k, v in groups.items() if len(v)}
    if data:
        allv = np.concatenate(list(data.values()))
        if log_x:
            pos = allv[allv > 0]
            lo, hi = (pos.min(), pos.max()) if len(pos) else (1e-6, 1.0)
            bins = np.geomspace(lo, hi * 1.0001 if hi > lo else lo * 10, 40)
            ax.set_xscale("log")
        else:
            lo, hi = float(allv.min()), float(allv.max())
            bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 40)
        for k, v in data.items():
            ax.hist(v, bins=bins, density=True, alpha=0.5, label=f"{k} (n={len(v)})", color=_COLOURS.get(k))
        ax.legend(fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=10)
    return fig


def scatter(x: Sequence[float], y: Sequence[float], xlabel: str, ylabel: str, title: str) -> Any:
    fig, ax = figure(4.2, 3.8)
    ax.scatter(x, y, s=4, alpha=0.4, color="#1f77b4", edgecolors="none")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    return fig


def heatmaps(matrices: Sequence[Any], tokens: list[str], titles: Sequence[str], suptitle: str,
             off_diagonal_scale: Sequence[bool] = ()) -> Any:
    """Matrices side by side, token labels on both axes; where ``off_diagonal_scale[k]``, matrix ``k``'s
    colour scale ends at its largest off-diagonal value (a token's weight on itself would hide the rest)."""
    from matplotlib.figure import Figure

    n = len(tokens)
    size = max(2.6, 0.32 * n + 1.2)
    fig = Figure(figsize=(size * len(matrices), size + 0.4), dpi=120)
    for k, (m, t) in enumerate(zip(matrices, titles)):
        ax = fig.add_subplot(1, len(matrices), k + 1)
        m = np.asarray(m, dtype=np.float64)
        vmax = None
        if k < len(off_diagonal_scale) and off_diagonal_scale[k] and n > 1:
            vmax = float(np.where(np.eye(n, dtype=bool), -np.inf, m).max())
        im = ax.imshow(m, cmap="viridis", vmax=vmax)
        ax.set_xticks(range(n), tokens, rotation=90, fontsize=7)
        ax.set_yticks(range(n), tokens, fontsize=7)
        ax.set_title(t, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(suptitle, fontsize=10)
    return fig


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows of dicts to CSV (columns in first-seen order)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_text(path, json.dumps(_plain(data), indent=2) + "\n")


def _plain(x: Any) -> Any:
    """NaN -> None and numpy scalars -> Python numbers, so that the JSON is standard."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if math.isnan(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def fmt_ci(value: float, ci: Sequence[float], digits: int = 3) -> str:
    """``0.812 [0.790, 0.834]``; without the interval when there is none (fewer than two prompts)."""
    if any(math.isnan(float(c)) for c in ci):
        return f"{value:.{digits}f} (no interval: one prompt)"
    return f"{value:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
