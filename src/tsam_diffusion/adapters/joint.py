"""Recording ``A`` from joint attention (MMDiT: SD3, FLUX.1), where image and text tokens share one softmax.

A joint-attention layer has no cross-attention probabilities of its own. Its image-to-text block
plays their role (``docs/design/mmdit.md``): for image queries ``q_a`` and text keys ``k_i`` after
the model's own normalisations (and rotary embedding),

    A_ai = softmax_i(q_a . k_i / sqrt(d))   over the text keys i only,

that is the joint probabilities renormalised over the text keys. ``JointRecordingProcessor`` wraps
the layer's own processor: the layer's output is always that processor's (SDPA, bitwise unchanged),
and while the recorder is active forward hooks catch the two projections it computes anyway (the
image queries ``to_q`` and the text keys ``add_k_proj``), so nothing is projected twice. The model
family supplies ``heads``: how its processor turns a projection into per-head queries or keys
(``[B, H, N, d]``: reshape, q/k norms, rotary embedding), which this module does not know.

Asked for it (``"text_share" in recorder.extra_wanted``, analysis only), the processor also records
each image query's share of the joint probability mass that falls on the text keys,
``m_a = sum_i P_ai`` over text keys ``i`` (``[B, H, Ni]``), from the image keys too (``to_k``), so
that the raw joint maps ``P_ai = m_a A_ai`` can be compared with the renormalised ones
(``tsam analyze attention --text-share``).
"""
from __future__ import annotations

from typing import Any, Callable, Literal

import torch

Heads = Callable[[Any, torch.Tensor, Literal["q", "k", "added_k"], tuple[Any, ...], int], torch.Tensor]
"""``heads(attn, projection, kind, args, n_text) -> [B, H, N, d]``: the family's per-head image queries
(``"q"``), image keys (``"k"``) or text keys (``"added_k"``) from a projection's output; ``args``: the
processor's positional arguments after ``attention_mask`` (Flux: the rotary embedding); ``n_text``: the
number of text tokens."""

_QUERY_CHUNK = 1024  # image queries per chunk for the text share's image-key scores


def text_probabilities(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d))`` over the text keys, in float32: ``[B, H, Ni, Nt]``, rows summing to 1."""
    scores = (q.float() * q.shape[-1] ** -0.5) @ k.float().transpose(-1, -2)  # scaled on the smaller side
    return scores.softmax(-1)


def text_share(q: torch.Tensor, k_text: torch.Tensor, k_image: torch.Tensor) -> torch.Tensor:
    """``m_a``: each image query's joint probability mass on the text keys, ``[B, H, Ni]`` in float32,
    ``exp(lse_text - logaddexp(lse_text, lse_image))``, the image-key scores chunked over queries."""
    q = q.float() * q.shape[-1] ** -0.5
    lse_text = (q @ k_text.float().transpose(-1, -2)).logsumexp(-1)
    lse_image = torch.cat([(chunk @ k_image.float().transpose(-1, -2)).logsumexp(-1)
                           for chunk in q.split(_QUERY_CHUNK, dim=2)], dim=-1)
    return (lse_text - torch.logaddexp(lse_text, lse_image)).exp()


def recording(heads: Heads) -> Callable[[Any, Any], "JointRecordingProcessor"]:
    """The ``CrossAttentionLayer.recording`` factory for a family's joint-attention layers."""
    return lambda recorder, original: JointRecordingProcessor(recorder, original, heads)


class JointRecordingProcessor:
    """The layer's own processor, plus its image-to-text probabilities recorded while the recorder is active."""

    def __init__(self, recorder: Any, original: Any, heads: Heads) -> None:
        self.recorder, self.original, self.heads = recorder, original, heads

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, *args: Any, **kwargs: Any) -> Any:
        if not self.recorder.active:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
        if encoder_hidden_states is None or getattr(attn, "add_k_proj", None) is None:
            raise ValueError(f"{type(attn).__name__} without a text stream cannot be read as joint attention "
                             "(single-stream blocks are not supported); read the joint (double-stream) blocks")
        share = "text_share" in self.recorder.extra_wanted
        caught: dict[str, torch.Tensor] = {}
        catch = {"q": attn.to_q, "added_k": attn.add_k_proj, **({"k": attn.to_k} if share else {})}
        hooks = [module.register_forward_hook(lambda m, i, out, kind=kind: caught.setdefault(kind, out))
                 for kind, module in catch.items()]
        try:
            out = self.original(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
        finally:
            for hook in hooks:
                hook.remove()
        if len(caught) < len(catch):
            raise RuntimeError(f"{type(self.original).__name__} computed no separate image-query and text-key "
                               "projections (fused QKV projections?): call pipe.unfuse_qkv_projections() before guidance")
        n_text = encoder_hidden_states.shape[1]
        q, k = (self.heads(attn, caught[kind], kind, args, n_text) for kind in ("q", "added_k"))
        if share:
            m = text_share(q, k, self.heads(attn, caught["k"], "k", args, n_text))
            self.recorder.extras.setdefault("text_share", []).append(m)
        probs = text_probabilities(q, k)  # [B, H, Ni, Nt]
        self.recorder._record(probs if self.recorder.keep_heads else probs.mean(1))  # heads of eq. 6
        return out
