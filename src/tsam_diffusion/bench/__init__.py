"""Benchmarks the way the paper ran them: suites, resumable multi-process runs, metrics, reports.

- ``suites``: the prompt suites shipped with the package and a loader for your own prompt files;
- ``run``: ``tsam bench run``, every (prompt, seed, method) image, resumable, split across processes;
- ``db``: the run directory's SQLite database;
- ``metrics`` and ``score``: ``tsam bench score`` (CLIP, BLIP caption, TIFA; ``register_metric``);
- ``report``: ``tsam bench report``, Markdown and a self-contained HTML page.

Importing this package does not import torch.
"""
from .metrics import Metric, MetricUnavailable, create_metric, register_metric

__all__ = ["Metric", "MetricUnavailable", "create_metric", "register_metric"]
