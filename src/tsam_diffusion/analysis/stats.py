"""Separation and correlation statistics of the analysis, numpy only.

``auc(pos, neg)`` is the probability that a value of ``pos`` exceeds one of ``neg`` (ties count
half: the Mann-Whitney U over ``len(pos) * len(neg)``), 0.5 for no separation; ``ks`` is the
two-sample Kolmogorov-Smirnov statistic (the largest gap between the empirical CDFs); ``pearson``
and ``spearman`` (Pearson on average ranks) the correlations. ``cluster_ci`` gives a percentile
bootstrap interval of any of them, resampling whole prompts (values of one prompt are not
independent).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np


def ranks(x: Any) -> np.ndarray:
    """Average ranks (1-based; ties share the mean of their ranks)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_x)) + 1]
    ends = np.r_[starts[1:], len(x)]
    avg = (starts + ends + 1) / 2.0  # mean of the 1-based ranks start+1..end
    out = np.empty(len(x))
    out[order] = np.repeat(avg, ends - starts)
    return out


def auc(pos: Any, neg: Any) -> float:
    """P(a value of ``pos`` > a value of ``neg``) + P(tie) / 2; NaN if either is empty."""
    pos, neg = np.asarray(pos, dtype=np.float64).ravel(), np.asarray(neg, dtype=np.float64).ravel()
    if not len(pos) or not len(neg):
        return math.nan
    r = ranks(np.r_[pos, neg])
    u = r[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def ks(a: Any, b: Any) -> float:
    """The two-sample Kolmogorov-Smirnov statistic, max |F_a - F_b|; NaN if either is empty."""
    a, b = np.sort(np.asarray(a, dtype=np.float64).ravel()), np.sort(np.asarray(b, dtype=np.float64).ravel())
    if not len(a) or not len(b):
        return math.nan
    grid = np.r_[a, b]
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.abs(fa - fb).max())


def pearson(x: Any, y: Any) -> float:
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def spearman(x: Any, y: Any) -> float:
    return pearson(ranks(x), ranks(y))


def cluster_ci(stat: Callable[[np.ndarray], float], groups: Sequence[Any], *, n: int = 1000, alpha: float = 0.05,
               seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of ``stat(index)`` resampling whole groups (prompts) with replacement.

    ``stat`` takes the indices of the values in a resample (a group drawn twice counts twice) and
    returns the statistic; fewer than two groups give NaNs.
    """
    labels, inverse = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
    if len(labels) < 2:
        return (math.nan, math.nan)
    members = [np.flatnonzero(inverse == k) for k in range(len(labels))]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        pick = rng.integers(0, len(labels), len(labels))
        v = stat(np.concatenate([members[k] for k in pick]))
        if not math.isnan(v):
            values.append(v)
    if not values:
        return (math.nan, math.nan)
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))


def separation(values: Any, positive: Any, groups: Sequence[Any], *, n: int = 1000) -> dict[str, Any]:
    """AUC (with its prompt-resampled 95% interval) and KS of ``values[positive]`` against the rest."""
    v, p = np.asarray(values, dtype=np.float64), np.asarray(positive, dtype=bool)
    lo, hi = cluster_ci(lambda i: auc(v[i][p[i]], v[i][~p[i]]), groups, n=n)
    return {"n_positive": int(p.sum()), "n_negative": int((~p).sum()), "auc": auc(v[p], v[~p]), "auc_ci": [lo, hi],
            "ks": ks(v[p], v[~p]), "mean_positive": mean_or_nan(v[p]), "mean_negative": mean_or_nan(v[~p])}


def correlation(x: Any, y: Any, groups: Sequence[Any], *, n: int = 1000) -> dict[str, Any]:
    """Pearson and Spearman correlation of ``x`` and ``y``, each with a prompt-resampled 95% interval."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return {"n": int(len(x)),
            "pearson": pearson(x, y), "pearson_ci": list(cluster_ci(lambda i: pearson(x[i], y[i]), groups, n=n)),
            "spearman": spearman(x, y), "spearman_ci": list(cluster_ci(lambda i: spearman(x[i], y[i]), groups, n=n))}


def mean_or_nan(x: "np.ndarray | list[float]") -> float:
    """The mean, NaN for none (a pair kind a prompt does not have)."""
    return float(np.mean(x)) if len(x) else math.nan
