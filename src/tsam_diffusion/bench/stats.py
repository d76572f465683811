"""The report's statistics: pure numpy functions on *rows*.

A row is an image row of ``RunDB.images()`` with a ``"scores"`` dict ``{"metric/key": value}`` added
(``join_scores``). ``bootstrap_ci`` is the percentile bootstrap of a mean (resampling whole prompts
when given their labels), ``paired_differences`` the ``method - baseline`` differences over images of
the same (suite, prompt, seed), ``element_accuracy`` the TIFA question accuracy per element type, and
``is_measure`` tells the measures (``metric/key``) from the TIFA ``correct:``/``questions:`` counts.
This module imports numpy only (no torch, no matplotlib).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = [
    "BASELINE",
    "COUNT_PREFIXES",
    "Row",
    "TIFA_SCORE",
    "bootstrap_ci",
    "element_accuracy",
    "is_measure",
    "join_scores",
    "paired_by_prompt",
    "paired_differences",
]

BASELINE = "vanilla"
TIFA_SCORE = "tifa/score"
COUNT_PREFIXES = ("correct:", "questions:")
LABEL_PREFIX = "vqa:"  # ``tifa/vqa:mplug`` = 1: which VQA model answered (a label, not a measure)
_METRIC_ORDER = ("clip", "clip-text", "tifa", "shapes")  # others follow alphabetically

Row = dict[str, Any]


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
    """Whether a score name ``metric/key`` is a measure (not a TIFA ``correct:``/``questions:`` count,
    nor the ``vqa:`` label of the model that answered)."""
    _, _, key = name.partition("/")
    return not key.startswith((*COUNT_PREFIXES, LABEL_PREFIX))


def vqa_models(rows: Sequence[Row]) -> list[str]:
    """The VQA models that answered the TIFA questions of ``rows`` (``tifa/vqa:NAME`` score keys)."""
    return sorted({k.split(LABEL_PREFIX, 1)[1] for r in rows for k in r["scores"] if k.startswith("tifa/" + LABEL_PREFIX)})


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
    return [d for d, _ in paired_by_prompt(rows, measure, method, baseline)]


def paired_by_prompt(rows: Sequence[Row], measure: str, method: str, baseline: str = BASELINE) -> list[tuple[float, str]]:
    """``(difference, prompt_id)`` pairs of ``paired_differences``, in its order (for prompt-resampled intervals)."""
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
