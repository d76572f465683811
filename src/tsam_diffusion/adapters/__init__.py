"""Model adapters: one per model family; ``adapter_for`` picks the one for a loaded pipeline."""
from __future__ import annotations

from typing import Any

from .base import Conditioning, CrossAttentionLayer, ModelAdapter, PromptText
from .stable_diffusion import StableDiffusionAdapter

ADAPTERS: list[type[ModelAdapter]] = [StableDiffusionAdapter]


def adapter_for(pipe: Any) -> ModelAdapter:
    """The adapter for ``pipe``; TypeError listing the supported pipeline classes otherwise."""
    for adapter in ADAPTERS:
        if adapter.supports(pipe):
            return adapter(pipe)
    supported = ", ".join(c.__name__ for a in ADAPTERS for c in a.pipeline_classes)
    raise TypeError(f"{type(pipe).__name__} is not supported by tsam_diffusion; supported pipelines: {supported}")


__all__ = ["ADAPTERS", "Conditioning", "CrossAttentionLayer", "ModelAdapter", "PromptText", "StableDiffusionAdapter", "adapter_for"]
