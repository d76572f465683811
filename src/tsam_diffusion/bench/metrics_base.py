"""The metric registry and what every metric module shares: the ``Metric`` base class, the
``MetricUnavailable`` error, weight loading with one-line fixes, batching helpers.

``tsam_diffusion.bench.metrics`` re-exports all of it and registers the built-in metrics; import
from there. This module imports neither torch nor transformers.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence, TypeVar

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["METRICS", "Metric", "MetricFactory", "MetricUnavailable", "metric_names", "register_metric"]


class MetricUnavailable(RuntimeError):
    """A metric's pretrained weights (or data, or packages) cannot be had; raised by its factory."""


class Metric(ABC):
    """An image metric: ``score`` returns one dict of named float values per image.

    ``config`` says what produced the values (checkpoints, which VQA model, data files), for logs
    and reports: ``{}`` in the base class, each built-in metric sets its own at construction.
    """

    name: str = ""
    config: dict[str, str] = {}  # replaced (never mutated) by each metric's __init__

    @abstractmethod
    def score(self, images: list[Image.Image], prompts: list[str], metas: list[dict]) -> list[dict[str, float]]:
        """Score ``images[i]`` against ``prompts[i]`` (with ``metas[i]``); batched inside."""


MetricFactory = Callable[..., Metric]
"""``factory(device: str, **options) -> Metric``; loads the weights, raises MetricUnavailable."""

METRICS: dict[str, MetricFactory] = {}


def register_metric(name: str, factory: MetricFactory) -> None:
    """Register (or replace) the factory ``(device, **options) -> Metric`` under ``name``."""
    METRICS[name] = factory


def metric_names() -> list[str]:
    """The registered metrics' names, sorted."""
    return sorted(METRICS)


# ----------------------------------------------------------------------------- loading


def _unavailable_message(metric: str, option: str, source: str, default: str, why: str, *, extra: str = "") -> str:
    wanted = default if source == default else f"{source} (in place of {default})"
    return (f"metric {metric!r} needs the pretrained checkpoint {wanted}, and {why}; download {default} where the "
            f"hub is reachable (`huggingface-cli download {default} --local-dir DIR`), copy DIR here and pass "
            f"`--option {metric}.{option}=DIR` (Python: `create_metric({metric!r}, {option}=DIR)`){extra}")


def _load(loader: Callable[..., Any], source: str, *, metric: str, option: str, default: str,
          extra: str = "", **kwargs: Any) -> Any:
    """``loader(source, **kwargs)`` (a ``from_pretrained``) with load failures as MetricUnavailable.

    Whether the weights can be had is decided first, in well under a second (``tsam_diffusion.hub``),
    so an offline machine gets the message at once rather than after the hub client's retries.
    ``extra`` is appended to the message (e.g. another way to get the metric).
    """
    from ..hub import WeightsNotFound, first_line, locate

    try:
        where = locate(source)
    except WeightsNotFound as exc:
        raise MetricUnavailable(_unavailable_message(metric, option, source, default, str(exc), extra=extra)) from None
    try:
        return loader(source, **where, **kwargs)
    except (OSError, ValueError) as exc:
        why = f"loading it failed ({first_line(exc)})"
        raise MetricUnavailable(_unavailable_message(metric, option, source, default, why, extra=extra)) from exc


T = TypeVar("T")


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    size = max(1, size)
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _check_lengths(images: Sequence[Any], prompts: Sequence[str], metas: Sequence[dict]) -> None:
    if not len(images) == len(prompts) == len(metas):
        raise ValueError(f"score() needs as many prompts and metas as images, got "
                         f"{len(images)} images, {len(prompts)} prompts, {len(metas)} metas")
