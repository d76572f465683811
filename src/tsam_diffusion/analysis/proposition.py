"""Proposition 1 against the measured maps at the first denoising step.

For one cross-attention layer and head, with queries ``q_a`` (the hidden states entering ``to_q``),
key inputs ``k_i`` (the text embeddings entering ``to_k``) and logits ``Omega_ai = q_a^T W_c k_i``
(``W_c = scale * W_q^T W_k`` of the head), the paper predicts

    cos(A_i, A_j) = exp(-1/2 (k_i - k_j)^T W^2 (k_i - k_j)),   W^2 = W_c^T Sigma W_c,

``Sigma`` the covariance of the queries (eq. 8; exact for Gaussian queries, which the first step's
are, up to O(1/sqrt(N_c)) and O(epsilon) of the attention sink). ``predicted_cosine`` evaluates it
from the layer's weights and the measured ``Sigma``; ``measured_cosine`` is the cosine of the
head's actual maps over the queries. Both for every pair of content tokens, vectorised over heads.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from diffusers.models.attention_processor import Attention


@torch.no_grad()
def predicted_cosine(attn: Attention, queries: torch.Tensor, keys: torch.Tensor, i: torch.Tensor,
                     j: torch.Tensor) -> torch.Tensor:
    """``[heads, P]`` Proposition 1's cosine for pairs ``(i[p], j[p])`` of key positions.

    ``queries`` ``[Nq, D]`` and ``keys`` ``[s, Dk]`` are one image's inputs of ``to_q`` and ``to_k``.
    """
    q, k = queries.double(), keys.double()
    heads = attn.heads
    d = attn.to_q.weight.shape[0] // heads
    wq = attn.to_q.weight.double().view(heads, d, -1)  # [H, d, D]
    wk = attn.to_k.weight.double().view(heads, d, -1)  # [H, d, Dk]
    centred = q - q.mean(0, keepdim=True)
    sigma = centred.T @ centred / max(q.shape[0] - 1, 1)  # [D, D] covariance of the queries
    delta = k[i] - k[j]  # [P, Dk]
    u = attn.scale * torch.einsum("hdq,hdk,pk->hpq", wq, wk, delta)  # W_c (k_i - k_j): [H, P, D]
    quad = torch.einsum("hpq,qr,hpr->hp", u, sigma, u)
    return torch.exp(-0.5 * quad).float()


@torch.no_grad()
def measured_cosine(probs: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """``[heads, P]`` cosine over the queries of the maps of key positions ``i[p]`` and ``j[p]``; ``probs`` ``[H, Nq, s]``."""
    a = torch.nn.functional.normalize(probs.double(), dim=1)
    return (a[:, :, i] * a[:, :, j]).sum(1).float()


@contextmanager
def projection_inputs(modules: dict[str, Attention]) -> Iterator[dict[str, dict[str, torch.Tensor]]]:
    """While active, ``inputs[name]["q"]`` / ``["k"]`` hold the last inputs of each layer's ``to_q`` / ``to_k``."""
    inputs: dict[str, dict[str, torch.Tensor]] = {name: {} for name in modules}
    handles = []
    for name, module in modules.items():
        for which, linear in (("q", module.to_q), ("k", module.to_k)):
            def hook(_m: Any, args: tuple, _store=inputs[name], _which=which) -> None:
                _store[_which] = args[0].detach()
            handles.append(linear.register_forward_pre_hook(hook))
    try:
        yield inputs
    finally:
        for h in handles:
            h.remove()


def checkable(attn: Attention) -> bool:
    """Proposition 1 reads ``q^T W_c k`` directly: no query/key normalisation in between."""
    return getattr(attn, "norm_q", None) is None and getattr(attn, "norm_k", None) is None and not attn.norm_cross
