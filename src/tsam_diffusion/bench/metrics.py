"""Image metrics for the benchmark harness, computed the way the papers' own evaluation code does.

Registry
--------
``create_metric(name, device="cpu", **options)`` builds a registered metric; ``METRICS`` maps each
name to its factory ``(device, **options) -> Metric`` and ``register_metric(name, factory)`` adds
one. A factory loads its weights (and data) at once and raises :class:`MetricUnavailable`, with one
message naming the checkpoint and the option that takes a local folder (or the package to install),
when it cannot. A metric's ``score(images, prompts, metas)`` returns one ``{key: float}`` dict per
image, ready for the run database's ``scores(job_id, metric, key, value)`` rows; its ``config``
says what produced them (checkpoints, VQA model).

Metrics
-------
Importing this module registers them.

``clip``, ``clip-text``  Attend-and-Excite's CLIP image-text and BLIP-caption text-text similarities:
    :mod:`tsam_diffusion.bench.metrics_clip`.
``tifa``  TIFA's VQA accuracy, answered by mPLUG-large as TIFA and the T-SAM paper do (``--option
    tifa.vqa=blip`` for BLIP VQA instead), keys ``score``, ``correct:<type>``, ``questions:<type>`` and
    ``vqa:<name>``: :mod:`tsam_diffusion.bench.metrics_tifa` and, for the VQA models,
    :mod:`tsam_diffusion.bench.metrics_vqa`.
``shapes``  ShapesJudge on ShapesBench images (exact, no weights): ``tsam_diffusion.mini.shapesbench``.

The registry, the base class and the loading helpers are in :mod:`tsam_diffusion.bench.metrics_base`;
every name is importable from here. This module imports neither torch nor transformers at import
time; the factories do.
"""
from __future__ import annotations

from typing import Any

from .metrics_base import (  # noqa: F401 - the private names too: imported from here before the split
    METRICS,
    Metric,
    MetricFactory,
    MetricUnavailable,
    _check_lengths,
    _chunks,
    _load,
    _unavailable_message,
    metric_names,
    register_metric,
)
from .metrics_clip import (  # noqa: F401
    BLIP_CAPTION_CHECKPOINT,
    BLIP_CAPTION_PROMPT,
    CLIP_CHECKPOINT,
    IMAGENET_TEMPLATES,
    ClipScore,
    ClipTextScore,
    _BlipCaptioner,
    _Clip,
    _features,
    clip_metric,
    clip_text_metric,
    fill_templates,
    split_objects,
    template_embedding,
)
from .metrics_tifa import (  # noqa: F401
    SBERT_CHECKPOINT,
    TIFA_QUESTIONS_URL,
    QuestionResult,
    TifaQuestion,
    TifaQuestions,
    TifaScore,
    VqaModel,
    _SBert,
    load_tifa_questions,
    map_to_choice,
    parse_tifa_questions,
    tifa_image_values,
    tifa_metric,
)
from .metrics_vqa import (  # noqa: F401
    BLIP_VQA_CHECKPOINT,
    MPLUG_INSTALL,
    MPLUG_VQA_CHECKPOINT,
    TIFA_VQA_CHECKPOINT,
    VQA_BACKENDS,
    BlipVqa,
    MplugVqa,
    VqaBackend,
    select_vqa,
)

_BlipVqa = BlipVqa  # its name before the VQA models moved to metrics_vqa

__all__ = [
    "BLIP_CAPTION_CHECKPOINT",
    "BLIP_CAPTION_PROMPT",
    "BLIP_VQA_CHECKPOINT",
    "CLIP_CHECKPOINT",
    "IMAGENET_TEMPLATES",
    "METRICS",
    "MPLUG_INSTALL",
    "MPLUG_VQA_CHECKPOINT",
    "SBERT_CHECKPOINT",
    "TIFA_QUESTIONS_URL",
    "TIFA_VQA_CHECKPOINT",
    "VQA_BACKENDS",
    "BlipVqa",
    "ClipScore",
    "ClipTextScore",
    "Metric",
    "MetricFactory",
    "MetricUnavailable",
    "MplugVqa",
    "QuestionResult",
    "TifaQuestion",
    "TifaQuestions",
    "TifaScore",
    "VqaBackend",
    "VqaModel",
    "create_metric",
    "fill_templates",
    "load_tifa_questions",
    "map_to_choice",
    "parse_tifa_questions",
    "register_metric",
    "select_vqa",
    "split_objects",
    "template_embedding",
    "tifa_image_values",
]

def create_metric(name: str, device: str = "cpu", **options: Any) -> Metric:
    """Build the metric registered as ``name`` on ``device``; unknown names raise ``ValueError``."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; valid names: {', '.join(sorted(METRICS))}")
    return METRICS[name](device, **options)


def shapes_metric(device: str = "cpu", **options: Any) -> Metric:
    """ShapesJudge on ShapesBench images (exact; no weights): ``tsam_diffusion.mini.shapesbench``."""
    from ..mini.shapesbench import shapes_metric as make

    return make(device, **options)


register_metric("clip", clip_metric)
register_metric("clip-text", clip_text_metric)
register_metric("tifa", tifa_metric)
register_metric("shapes", shapes_metric)
