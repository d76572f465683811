"""T-SAM (Kim, Esmaeili, Qiu, CVPR 2025): the latent moves so that ``S`` of the maps matches ``T`` of the text.

``T`` (eq. 2-3) is the text encoder's self-attention over the prompt's content tokens, raised to
``gamma`` (eq. 14); ``S`` (eq. 7) is the cosine similarity of the smoothed cross-attention maps of
the same tokens; the loss is eq. 14's ``sum_i rho_i sum_{j<=i} |T_ij - S_ij|``. No token is chosen
by hand: the method needs no external information about the prompt.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ..diagnostics import Diagnostics
from ..functional import similarity_matrix, text_attention_matrix, tsam_loss
from .base import ContentTokens, GuidanceConfig

PRESETS: dict[str, dict[str, Any]] = {
    # Section 5 / appendix B.2, SD v1.5 on the TIFA benchmark: one update at each of steps 0..24 of 50.
    "sd-tifa": dict(alpha=40.0, gamma=4.0),
    # Section 5 / appendix B.2, SD v1.5 on the Attend-and-Excite prompts: plus 20 refinement
    # iterations at steps 0, 10 and 20.
    "sd-ae": dict(alpha=10.0, gamma=2.0, refinement_steps=(0, 10, 20), refinement_iterations=20),
    # The bundled tsam-mini v2 (25 DDIM steps): chosen on shapes-dev by a rule fixed in advance
    # (docs/tsam-mini.md: eq. 7's S, gamma 4, alpha 10); never tuned on shapes-test.
    "mini": dict(alpha=10.0, gamma=4.0),
    # Appendix B.2, PixArt-alpha (50 steps): one update at each of steps 0..24 and 10 refinement
    # iterations at steps 0, 10 and 20; the maps of blocks 10-18 (the adapter's default layers).
    "pixart": dict(alpha=15.0, gamma=4.0, refinement_steps=(0, 10, 20), refinement_iterations=10),
    # SDXL (not in the paper; not tuned: no SDXL weights were reachable here): sd-tifa's schedule
    # and step size on the 32x32 cross-attention layers (M = 1024 at 1024px, 60 layers).
    "sdxl": dict(alpha=40.0, gamma=4.0, M=1024),
    # SD3/SD3.5 and FLUX.1 (not in the paper; NOT tuned: no weights were reachable here). sd-tifa's
    # schedule and gamma on the family's default joint-attention blocks (docs/design/mmdit.md), eq. 7's
    # Gaussian scaled with the map side (64x64 at 1024px, 4x SD's 16x16: sigma 2, kernel 9); alpha is
    # a starting point to tune with weights (flow-matching latents, about unit variance as SD's).
    "sd3": dict(alpha=40.0, gamma=4.0, sigma=2.0, kernel_size=9),
    "flux": dict(alpha=40.0, gamma=4.0, sigma=2.0, kernel_size=9),
}
"""T-SAM presets, written for a 50-step schedule (see ``GuidanceConfig.schedule``). Each model
family names its default one (``ModelAdapter.default_preset``)."""


@dataclass(frozen=True)
class TSAMConfig(GuidanceConfig):
    """T-SAM guidance settings: the shared schedule (``methods.base``) and these.

    Attributes:
        alpha: step size of eq. 15 (default 40, appendix B.2).
        gamma: exponent on ``T`` (eq. 14).
        loss_threshold: if set, an image whose loss is at or below it is not updated, and refinement
            at a step stops as soon as every image is below it (the authors' release).
        loss: ``"l1"`` (eq. 14) or ``"cosine"`` (the authors' released code).
        normalize: normalisation of ``S``: ``"causal"`` (rows over ``j <= i``, like ``T``) or ``"full"``.
        center_maps: not in the paper: compare the maps' spatial patterns (``(1 + r) / 2`` with
            ``r`` their correlation) instead of eq. 7's plain cosine, for models whose maps are
            nearly uniform (``functional.similarity_matrix``'s ``center``).
    """

    method = "tsam"
    presets = PRESETS

    alpha: float = 40.0
    gamma: float = 4.0
    loss_threshold: float | None = None
    loss: Literal["l1", "cosine"] = "l1"
    normalize: Literal["causal", "full"] = "causal"
    center_maps: bool = False

    def checks(self) -> list[tuple[str, bool, str]]:
        return super().checks() + [
            ("gamma", math.isfinite(self.gamma) and self.gamma > 0, "must be > 0"),
            ("loss_threshold", self.loss_threshold is None or self.loss_threshold >= 0, "must be >= 0 or None"),
            ("loss", self.loss in ("l1", "cosine"), "must be 'l1' or 'cosine'"),
            ("normalize", self.normalize in ("causal", "full"), "must be 'causal' or 'full'"),
            ("center_maps", isinstance(self.center_maps, bool), "must be True or False"),
        ]

    def objective(self, adapter, prompts, prompt_index, tokens, diagnostics) -> "TSAMObjective":
        return TSAMObjective(self, adapter, prompts, prompt_index, diagnostics)

    def should_update(self, step, iteration, loss, num_inference_steps):
        if self.loss_threshold is None:
            return super().should_update(step, iteration, loss, num_inference_steps)
        return loss > self.loss_threshold

    def updates_left(self, step, iteration, loss, left, num_inference_steps):
        if self.loss_threshold is None:
            return left - 1
        return torch.where(loss > self.loss_threshold, left - 1, 0)  # at the threshold: done at this step

    def to_dict(self) -> dict[str, Any]:
        # No "method" key: T-SAM's configuration reads as it did before other methods existed, so
        # benchmark runs started then still resume (bench/db.py compares the JSON).
        return dataclasses.asdict(self)


class TSAMObjective:
    """``T`` of every prompt (padded to the longest) and eq. 14's loss against ``S`` of the maps."""

    def __init__(self, config: TSAMConfig, adapter: Any, prompts: list[str], prompt_index: list[int],
                 diagnostics: Diagnostics) -> None:
        self.config = config
        device = adapter.device
        texts = adapter.text_attention(prompts)
        self.tokens = ContentTokens(texts, prompt_index, device, diagnostics)
        T = [text_attention_matrix(t.attentions, t.keep.to(device), bidirectional=adapter.bidirectional, gamma=config.gamma)
             for t in texts]  # eq. 2-3, then ^gamma (eq. 14)
        diagnostics.T = [t.detach() for t in T]
        n = self.tokens.keep.shape[1]
        padded_T = torch.zeros(len(texts), n, n, device=device)  # prompts of different lengths: zero-padded
        for p, t in enumerate(T):
            padded_T[p, : t.shape[0], : t.shape[0]] = t
        self.T = padded_T[torch.as_tensor(prompt_index, device=device)]
        self.active = self.tokens.lengths >= 2  # one content token: nothing to align, a no-op
        for p, text in enumerate(texts):
            if len(text.tokens) < 2:
                diagnostics.notes.append(f"prompt {p} has {len(text.tokens)} content token(s): T-SAM guidance is a no-op for it")

    def loss(self, A: torch.Tensor, map_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        S = similarity_matrix(self.tokens.content_maps(A), *map_size, sigma=cfg.sigma, kernel_size=cfg.kernel_size,
                              normalize=cfg.normalize, center=cfg.center_maps)  # eq. 7
        return tsam_loss(self.T, S, variant=cfg.loss, lengths=self.tokens.lengths), S  # eq. 14
