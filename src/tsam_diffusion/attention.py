"""Reading cross-attention probabilities out of a diffusers denoiser (eq. 5-6).

``CrossAttentionRecorder.install`` puts an explicit-probability processor on the cross-attention
layers that are read, and only there; every other layer keeps its own (SDPA) processor. While the
recorder is not ``active`` those layers run their original processor too, so sampling steps
without a T-SAM update pay nothing. When active, each layer adds its head-averaged probabilities
``[B, Nq, s]``; ``mean()`` averages over layers, giving ``A`` of eq. 6. With ``early_exit`` the
forward pass is cut short right after the last layer read (``EarlyExit``, caught by ``run``),
since nothing above it contributes to the loss: the decoder's high-resolution blocks never run
for an update.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from diffusers.models.attention_processor import Attention


class EarlyExit(Exception):
    """Raised inside the denoiser once every layer that is read has been recorded."""


class CrossAttentionRecorder:
    """Collects head-averaged cross-attention probabilities from a fixed set of layers."""

    def __init__(self, modules: dict[str, Attention], *, early_exit: bool = True, keep_heads: bool = False,
                 processors: dict[str, Callable[["CrossAttentionRecorder", Any], Any]] | None = None) -> None:
        if not modules:
            raise ValueError("no cross-attention layers to record")
        self.modules = modules
        # name -> factory(recorder, original processor) of a recording processor for layers that are not
        # plain cross-attention (joint attention: ``adapters.joint``); the others get ``_RecordingProcessor``
        self.processors = processors or {}
        # what else a recording processor should record, by name, when it knows how (joint attention:
        # "text_share", for analysis); it appends to ``extras[name]`` per layer, in call order
        self.extra_wanted: set[str] = set()
        self.extras: dict[str, list[torch.Tensor]] = {}
        self.early_exit = early_exit
        self.keep_heads = keep_heads  # record [B, heads, Nq, s] per layer (analysis) instead of the heads' mean
        self.active = False
        self.maps: list[torch.Tensor] = []
        self._complete = False
        self._original: dict[str, object] = {}

    @contextmanager
    def install(self) -> Iterator["CrossAttentionRecorder"]:
        """Install the recording processors for the duration of the block, then restore the originals."""
        for name, module in self.modules.items():
            self._original[name] = module.processor
            module.set_processor(self.processors.get(name, _RecordingProcessor)(self, module.processor))
        try:
            yield self
        finally:
            for name, module in self.modules.items():
                module.set_processor(self._original[name])
            self._original.clear()

    @contextmanager
    def capture(self) -> Iterator["CrossAttentionRecorder"]:
        """Record during the block: the update's forward pass, and its backward, which may recompute
        checkpointed layers (they then take the same explicit path but record nothing)."""
        self.maps, self.extras, self.active, self._complete = [], {}, True, False
        try:
            yield self
        finally:
            self.active = False

    @classmethod
    def of(cls, layers: list[Any], **kwargs: Any) -> "CrossAttentionRecorder":
        """A recorder on ``layers`` (``adapters.CrossAttentionLayer``), each with its own recording processor."""
        return cls({layer.name: layer.module for layer in layers},
                   processors={layer.name: layer.recording for layer in layers if layer.recording is not None}, **kwargs)

    def run(self, forward: Callable[[], object]) -> None:
        """Run a denoiser pass under ``capture``, stopping it at ``EarlyExit``."""
        try:
            forward()
        except EarlyExit:
            pass

    def mean(self) -> torch.Tensor:
        """``A`` of eq. 6: the recorded maps averaged over layers, ``[B, M, s]`` in float32."""
        if not self.maps:
            raise RuntimeError("no cross-attention maps were recorded")
        return torch.stack([m.float() for m in self.maps]).mean(0)

    def _record(self, probs: torch.Tensor) -> None:
        if self._complete:  # a recomputation (gradient checkpointing) during backward
            return
        self.maps.append(probs)
        if len(self.maps) == len(self.modules):
            self._complete = True
            if self.early_exit:
                raise EarlyExit


class _RecordingProcessor:
    """diffusers' explicit ``AttnProcessor`` computation, keeping the probabilities; otherwise the original."""

    def __init__(self, recorder: CrossAttentionRecorder, original: object) -> None:
        self.recorder = recorder
        self.original = original

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: object,
        **kwargs: object,
    ) -> torch.Tensor:
        if not self.recorder.active:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], context.shape[0])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        query = attn.head_to_batch_dim(query)
        key = attn.head_to_batch_dim(attn.to_k(context))
        value = attn.head_to_batch_dim(attn.to_v(context))

        probs = attn.get_attention_scores(query, key, attention_mask)  # eq. 5, [B*heads, Nq, s]
        hidden_states = attn.batch_to_head_dim(torch.bmm(probs.to(value.dtype), value))
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        hidden_states = hidden_states / attn.rescale_output_factor

        b = probs.shape[0] // attn.heads
        probs = probs.view(b, attn.heads, *probs.shape[1:])
        self.recorder._record(probs if self.recorder.keep_heads else probs.mean(1))  # heads of eq. 6
        return hidden_states
