"""Model adapters: one per model family; ``adapter_for`` picks the one for a loaded pipeline."""
from __future__ import annotations

from typing import Any

from .base import Conditioning, CrossAttentionLayer, ModelAdapter, PromptText
from .flux import FluxAdapter
from .mini import MiniAdapter
from .pixart import PixArtAlphaAdapter, PixArtSigmaAdapter
from .sd3 import StableDiffusion3Adapter
from .sdxl import StableDiffusionXLAdapter
from .stable_diffusion import StableDiffusionAdapter

ADAPTERS: list[type[ModelAdapter]] = [StableDiffusionAdapter, StableDiffusionXLAdapter, PixArtSigmaAdapter, PixArtAlphaAdapter,
                                      StableDiffusion3Adapter, FluxAdapter, MiniAdapter]


def adapter_for(pipe: Any) -> ModelAdapter:
    """The adapter for ``pipe``; TypeError listing the supported pipeline classes otherwise."""
    for adapter in ADAPTERS:
        if adapter.supports(pipe):
            return adapter(pipe)
    supported = ", ".join(a.label for a in ADAPTERS)
    raise TypeError(f"{type(pipe).__name__} is not supported by tsam_diffusion; supported pipelines: {supported}")


__all__ = ["ADAPTERS", "MiniAdapter", "Conditioning", "CrossAttentionLayer", "FluxAdapter", "ModelAdapter", "PixArtAlphaAdapter", "PixArtSigmaAdapter", "PromptText", "StableDiffusion3Adapter", "StableDiffusionXLAdapter", "StableDiffusionAdapter", "adapter_for"]
