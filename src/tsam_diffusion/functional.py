"""The paper's math as small pure tensor functions.

Notation (Kim, Esmaeili, Qiu, "Text Embedding is Not All You Need", CVPR 2025):

- ``T``  text self-attention matrix of the text encoder, averaged over layers and heads (eq. 2),
  restricted to the prompt's content tokens and re-normalised row by row (eq. 3).
- ``A``  cross-attention maps of the denoiser, averaged over heads and the layers whose query count
  is ``M`` (eq. 6); shape ``[..., M, n]``, one map over ``M = height * width`` positions per token.
- ``S``  similarity matrix of the (Gaussian-smoothed) cross-attention maps (eq. 7).
- ``gamma``  exponent on ``T`` acting as a temperature (eq. 14).
- ``rho``  row weights ``rho_i = i / n`` of the loss (eq. 14).
- ``alpha``  step size of the latent update ``z_t' = z_t - alpha * grad L(z_t)`` (eq. 15).

Every function computes in float32 whatever dtype it is given, and leading batch dimensions
``...`` broadcast.
"""
from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
Index = Tensor | Sequence[int] | slice

_EPS = 1e-12


def text_attention_matrix(
    attn: Tensor | Sequence[Tensor],
    keep: Index,
    *,
    bidirectional: bool = False,
    gamma: float = 1.0,
) -> Tensor:
    """``T`` from a text encoder's self-attention probabilities (eq. 2-3, appendix B.2).

    Args:
        attn: probabilities of one prompt, ``[..., L, H, N, N]`` (layers, heads, sequence), or a
            sequence of ``L`` tensors ``[..., H, N, N]`` (what transformers returns as ``attentions``).
        keep: positions of the prompt's content tokens (CLIP: ``1..eos-1``; T5: ``0..eos-1``).
        bidirectional: the encoder attends both ways (T5): use ``tril((T' + T'^T) / 2)`` (app. B.2).
        gamma: elementwise exponent (eq. 14), applied before the row re-normalisation as the
            authors' code does; ``(cT)^g / sum (cT)^g`` is the same whichever way round.

    Returns:
        ``[..., n, n]`` lower-triangular, each row a distribution over ``j <= i``.
    """
    if not isinstance(attn, Tensor):
        attn = torch.stack([a.float() for a in attn], dim=-4)
    t = attn.float().mean(dim=(-4, -3))  # eq. 2: average over layers and heads
    if bidirectional:
        t = torch.tril((t + t.transpose(-1, -2)) / 2)  # appendix B.2
    keep = _as_index(keep, t.device)
    t = t[..., keep, :][..., :, keep]
    t = torch.tril(t.pow(gamma))
    return t / t.sum(dim=-1, keepdim=True).clamp_min(_EPS)  # eq. 3


def gaussian_kernel(kernel_size: int = 3, sigma: float = 0.5, device: torch.device | str | None = None) -> Tensor:
    """The 2-D smoothing kernel of Attend-and-Excite and the authors' code, normalised to sum 1.

    Per axis the weight is ``exp(-((x - c) / (2 * sigma))**2)`` around the centre ``c``, so its
    standard deviation is ``sigma * sqrt(2)``; kept so, so that ``sigma=0.5`` means what it means
    in the paper.
    """
    x = torch.arange(kernel_size, dtype=torch.float32, device=device) - (kernel_size - 1) / 2
    g = torch.exp(-((x / (2 * sigma)) ** 2))
    k = g[:, None] * g[None, :]
    return k / k.sum()


def smooth_maps(maps: Tensor, *, sigma: float = 0.5, kernel_size: int = 3) -> Tensor:
    """Gaussian-smooth images ``[..., height, width]`` with reflect padding (no-op for sigma 0 or size 1)."""
    if sigma <= 0 or kernel_size <= 1:
        return maps
    *batch, h, w = maps.shape
    pad = kernel_size // 2
    x = maps.reshape(-1, 1, h, w)
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    k = gaussian_kernel(kernel_size, sigma, device=x.device)[None, None]  # made on the device: no host copy
    return F.conv2d(x, k).reshape(*batch, h, w)


def map_cosine(A: Tensor, height: int, width: int, *, sigma: float = 0.5, kernel_size: int = 3,
               center: bool = False) -> Tensor:
    """``C``: the cosine similarity of the tokens' Gaussian-smoothed maps (eq. 7 before normalising),
    ``[..., M, n] -> [..., n, n]`` in float32; ``center``: see ``similarity_matrix``."""
    *batch, m, n = A.shape
    if m != height * width:
        raise ValueError(f"A has {m} queries but height * width = {height} * {width} = {height * width}")
    maps = A.float().transpose(-1, -2).reshape(*batch, n, height, width)
    maps = smooth_maps(maps, sigma=sigma, kernel_size=kernel_size).flatten(-2)  # [..., n, M]
    if center:
        maps = maps - maps.mean(dim=-1, keepdim=True)
    unit = maps / maps.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    C = unit @ unit.transpose(-1, -2)
    return (1.0 + C) / 2 if center else C


def similarity_matrix(
    A: Tensor,
    height: int,
    width: int,
    *,
    sigma: float = 0.5,
    kernel_size: int = 3,
    normalize: Literal["causal", "full"] = "causal",
    center: bool = False,
) -> Tensor:
    """``S`` from averaged cross-attention maps (eq. 6-7).

    Args:
        A: ``[..., M, n]`` cross-attention probabilities of the content tokens, ``M = height * width``
            queries in row-major order.
        normalize: ``"causal"``: ``S_ij = C_ij / sum_{k<=i} C_ik`` for ``j <= i``, 0 above the diagonal
            (each row of S has the support of the row of T it is compared with); ``"full"``:
            ``S_ij = C_ij / sum_k C_ik``, eq. 7 as printed.
        center: not in the paper (off by default): ``C_ij = (1 + r_ij) / 2`` with ``r_ij`` the cosine
            of the maps minus their spatial means (their Pearson correlation), so 1 for the same
            pattern, 1/2 for unrelated ones, 0 for opposite ones. For models whose maps are a large
            uniform level plus a small spatial pattern, eq. 7's cosine is about 1 for every pair and
            flat in the pattern, so the loss has almost no gradient; centring compares the patterns.

    Returns:
        ``[..., n, n]``.
    """
    C = map_cosine(A, height, width, sigma=sigma, kernel_size=kernel_size, center=center)
    if normalize == "full":
        return C / C.sum(dim=-1, keepdim=True).clamp_min(_EPS)
    if normalize != "causal":
        raise ValueError(f"normalize must be 'causal' or 'full', got {normalize!r}")
    C = torch.tril(C)
    return C / C.sum(dim=-1, keepdim=True).clamp_min(_EPS)


def tsam_loss(
    T: Tensor,
    S: Tensor,
    *,
    variant: Literal["l1", "cosine"] = "l1",
    lengths: Tensor | None = None,
) -> Tensor:
    """The T-SAM objective between ``T`` (already raised to ``gamma``) and ``S``; ``[..., n, n] -> [...]``.

    ``variant="l1"`` (eq. 14): ``sum_{i=1..n} rho_i sum_{j<=i} |T_ij - S_ij|`` with ``rho_i = i / n``.
    ``variant="cosine"`` (the default of the authors' released code), 0-based:
    ``sum_{r=1..n-1} 0.2 * r * (1 - cos(T[r, :r], S[r, :r]))``.

    ``lengths`` (optional, ``[...]`` integers): the number of content tokens of each item when
    prompts of different lengths are zero-padded to a common ``n``; rows past it are ignored and
    ``rho`` uses each item's own length.
    """
    T, S = T.float(), S.float()
    n = T.shape[-1]
    i = torch.arange(n, device=T.device)
    length = torch.full((), n, device=T.device) if lengths is None else lengths.to(T.device)
    row_ok = i < length[..., None]  # [..., n]
    if variant == "l1":
        rho = (i + 1) / length[..., None].float()
        per_row = (torch.tril(T - S).abs()).sum(dim=-1)
        return (rho * per_row * row_ok).sum(dim=-1)
    if variant == "cosine":
        strict = torch.tril(torch.ones(n, n, dtype=torch.bool, device=T.device), diagonal=-1)
        t, s = T * strict, S * strict
        cos = (t * s).sum(-1) / (t.norm(dim=-1) * s.norm(dim=-1)).clamp_min(_EPS)
        weight = 0.2 * i * row_ok  # row 0 has no column left of the diagonal: weight 0
        return (weight * (1 - cos)).sum(dim=-1)
    raise ValueError(f"variant must be 'l1' or 'cosine', got {variant!r}")


def step_sizes(
    alpha: float, num_inference_steps: int, schedule: Literal["sqrt-decay", "constant"] = "sqrt-decay"
) -> list[float]:
    """``alpha`` at each denoising step (eq. 15's step size), ``num_inference_steps`` entries.

    ``"sqrt-decay"``: ``alpha * sqrt(linspace(1.0, 0.5, num_inference_steps))[i]``, as
    Attend-and-Excite and the authors' code do; ``"constant"``: ``alpha`` throughout. The pipeline
    asks for ``len(scheduler.timesteps)`` entries, as they do (51 for PNDM's 50 steps).
    """
    if schedule == "constant":
        return [float(alpha)] * num_inference_steps
    if schedule != "sqrt-decay":
        raise ValueError(f"schedule must be 'sqrt-decay' or 'constant', got {schedule!r}")
    scale = torch.linspace(1.0, 0.5, num_inference_steps, dtype=torch.float64)
    return [float(alpha * math.sqrt(s)) for s in scale.tolist()]


def _as_index(keep: Index, device: torch.device) -> Tensor | slice:
    if isinstance(keep, slice):
        return keep
    return torch.as_tensor(keep, dtype=torch.long, device=device).reshape(-1)
