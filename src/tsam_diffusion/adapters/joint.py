"""Recording ``A`` from joint attention (MMDiT: SD3, FLUX.1), where image and text tokens share one softmax.

A joint-attention layer has no cross-attention probabilities of its own. Its image-to-text block
plays their role (``docs/design/mmdit.md``): for image queries ``q_a`` and text keys ``k_i`` after
the model's own normalisations (and rotary embedding),

    A_ai = softmax_i(q_a . k_i / sqrt(d))   over the text keys i only,

that is the joint probabilities renormalised over the text keys. ``JointRecordingProcessor`` wraps
the layer's own processor: the layer's output is always that processor's (SDPA, bitwise unchanged),
and while the recorder is active forward hooks catch the two projections it computes anyway (the
image queries ``to_q`` and the text keys ``add_k_proj``), so nothing is projected twice. The model
family supplies ``heads_qk``: how its processor turns those projections into per-head queries and
keys (``[B, H, N, d]``), which this module does not know.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

HeadsQK = Callable[[Any, torch.Tensor, torch.Tensor, tuple[Any, ...]], tuple[torch.Tensor, torch.Tensor]]
"""``heads_qk(attn, image_query_projection, text_key_projection, args) -> (q [B, H, Ni, d], k [B, H, Nt, d])``;
``args``: the processor's positional arguments after ``attention_mask`` (Flux: the rotary embedding)."""


def text_probabilities(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d))`` over the text keys, in float32: ``[B, H, Ni, Nt]``, rows summing to 1."""
    scores = (q.float() * q.shape[-1] ** -0.5) @ k.float().transpose(-1, -2)  # scaled on the smaller side
    return scores.softmax(-1)


def recording(heads_qk: HeadsQK) -> Callable[[Any, Any], "JointRecordingProcessor"]:
    """The ``CrossAttentionLayer.recording`` factory for a family's joint-attention layers."""
    return lambda recorder, original: JointRecordingProcessor(recorder, original, heads_qk)


class JointRecordingProcessor:
    """The layer's own processor, plus its image-to-text probabilities recorded while the recorder is active."""

    def __init__(self, recorder: Any, original: Any, heads_qk: HeadsQK) -> None:
        self.recorder, self.original, self.heads_qk = recorder, original, heads_qk

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, *args: Any, **kwargs: Any) -> Any:
        if not self.recorder.active:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
        if encoder_hidden_states is None or getattr(attn, "add_k_proj", None) is None:
            raise ValueError(f"{type(attn).__name__} without a text stream cannot be read as joint attention "
                             "(single-stream blocks are not supported); read the joint (double-stream) blocks")
        caught: dict[str, torch.Tensor] = {}
        hooks = [attn.to_q.register_forward_hook(lambda m, i, out: caught.setdefault("q", out)),
                 attn.add_k_proj.register_forward_hook(lambda m, i, out: caught.setdefault("k", out))]
        try:
            out = self.original(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
        finally:
            for hook in hooks:
                hook.remove()
        if len(caught) < 2:
            raise RuntimeError(f"{type(self.original).__name__} computed no separate image-query and text-key "
                               "projections (fused QKV projections?): call pipe.unfuse_qkv_projections() before guidance")
        q, k = self.heads_qk(attn, caught["q"], caught["k"], args)
        probs = text_probabilities(q, k)  # [B, H, Ni, Nt]
        self.recorder._record(probs if self.recorder.keep_heads else probs.mean(1))  # heads of eq. 6
        return out
