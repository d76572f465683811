"""Cross-attention maps of the content tokens at chosen denoising steps, without changing the images.

``TSAMPipeline(..., record_maps=[0, 9])`` builds a ``MapRecording``: at each chosen step it runs one
extra conditional denoiser pass on the latents the sampler is about to denoise (after any guidance
update of that step), reads the layers guidance reads by default (or the method's ``layers``),
and stores ``A`` of eq. 6 for the content tokens, ``[B, M, n]`` on the CPU, in
``diagnostics.maps[step]``. The sampling passes themselves are untouched, so the images are the
same as without recording. This is what the analysis tools (``tsam analyze``) and ``--save-maps``
for unguided images read.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch

from .adapters import ModelAdapter
from .attention import CrossAttentionRecorder
from .diagnostics import Diagnostics
from .guidance import select_layers
from .methods import GuidanceConfig, resolve_method
from .methods.base import ContentTokens


class MapRecording:
    """The maps of ``steps`` (0-based loop steps, as ``TSAMConfig.update_steps``) for one batch."""

    def __init__(self, adapter: ModelAdapter, steps: Sequence[int], loop_steps: int, prompts: list[str],
                 prompt_index: list[int], height: int, width: int, diagnostics: Diagnostics,
                 config: GuidanceConfig | None = None) -> None:
        bad = [s for s in steps if not isinstance(s, int) or isinstance(s, bool) or not 0 <= s < loop_steps]
        if bad:
            raise ValueError(f"record_maps takes denoising step indices 0-{loop_steps - 1} (0 is the first step; "
                             f"this sampler makes {loop_steps}), got {bad}")
        self.adapter, self.steps, self.diagnostics = adapter, set(steps), diagnostics
        layers = select_layers(adapter.cross_attention_layers(height, width),
                               config or resolve_method("default", adapter.default_preset), adapter.default_layers)
        self.map_size = (layers[0].height, layers[0].width)
        self.layers = [layer.name for layer in layers]
        self.recorder = CrossAttentionRecorder.of(layers)
        self.tokens = ContentTokens(adapter.text_attention(prompts), prompt_index, adapter.device, diagnostics)
        diagnostics.layers, diagnostics.map_size = self.layers, self.map_size  # as guidance's (same config)

    @contextmanager
    def install(self) -> Iterator["MapRecording"]:
        with self.recorder.install():
            yield self

    def __call__(self, step: int, latents: torch.Tensor, t: torch.Tensor, cond: Any) -> None:
        """Record step ``step``'s maps if it is one of ``steps``."""
        if step not in self.steps:
            return
        with torch.no_grad(), self.recorder.capture():
            self.recorder.run(lambda: self.adapter.forward_cond(latents, t, cond))
            self.diagnostics.maps[step] = self.tokens.content_maps(self.recorder.mean()).cpu()
