"""Attend-and-Excite (Chefer, Alaluf, Vinker, Wolf, Cohen-Or, SIGGRAPH 2023): excite each object's map.

For each subject token ``k`` (the nouns of the prompt, given), its cross-attention map is re-normalised
over the text tokens (``softmax(100 * A[..., 1:-1])``, BOS and the last position left out, as the A&E
code and diffusers do for SD 1.x), Gaussian-smoothed, and its maximum ``m_k`` taken; the loss is
``max_k (1 - m_k)``: the most neglected subject. Updates at steps 0..24 of 50 with step size
``20 * sqrt(linspace(1, 0.5, len(timesteps)))``, and at steps 0, 10 and 20 an iterative refinement
until every subject's maximum reaches 0.05, 0.5 and 0.8 (or 20 iterations), then the regular update.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..diagnostics import Diagnostics
from ..functional import smooth_maps
from .base import GuidanceConfig, per_image, told_tokens


def attend_excite_loss(
    A: torch.Tensor, subjects: torch.Tensor, subject_mask: torch.Tensor, text_mask: torch.Tensor, height: int, width: int, *,
    scale: float = 100.0, sigma: float = 0.5, kernel_size: int = 3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A&E's loss ``max_k max(0, 1 - max(smooth(softmax_text(scale * A))[k]))``; ``[B]`` and the maxima ``[B, K]``.

    Args:
        A: cross-attention maps ``[B, M, s]`` over the whole key sequence, ``M = height * width``.
        subjects: ``[B, K]`` key positions of the subject tokens (any value where ``subject_mask`` is False).
        subject_mask: ``[B, K]`` which entries of ``subjects`` are real.
        text_mask: ``[B, s]`` the key positions the softmax runs over.
    """
    logits = (A.float() * scale).masked_fill(~text_mask[:, None, :], float("-inf"))
    P = logits.softmax(-1)  # [B, M, s]
    maps = P.gather(-1, subjects[:, None, :].expand(-1, P.shape[1], -1))  # [B, M, K]
    maps = smooth_maps(maps.transpose(1, 2).reshape(*subjects.shape, height, width), sigma=sigma, kernel_size=kernel_size)
    peaks = maps.flatten(-2).amax(-1)  # [B, K]
    losses = ((1.0 - peaks).clamp_min(0) * subject_mask).amax(-1)
    return losses, peaks


@dataclass(frozen=True)
class AttendExciteConfig(GuidanceConfig):
    """Attend-and-Excite settings: the shared schedule (``methods.base``) and these.

    Attributes:
        thresholds: per refinement step, the maximum attention every subject should reach
            (A&E's ``{0: 0.05, 10: 0.5, 20: 0.8}``); refinement stops when it does.
        softmax_scale: the factor before the softmax over the text tokens (100).
        normalize_eot: the softmax runs over the prompt's own tokens only (A&E's setting for
            SD 2.1, ``normalize_eot``) instead of every key position but the first and the last.
    """

    method = "attend-excite"
    presets = {"ae": {}}  # the A&E paper's (and diffusers') settings for SD 1.x
    default_preset = "ae"

    alpha: float = 20.0
    refinement_steps: tuple[int, ...] = (0, 10, 20)
    refinement_iterations: int = 20
    thresholds: tuple[float, ...] = (0.05, 0.5, 0.8)
    softmax_scale: float = 100.0
    normalize_eot: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))
        super().__post_init__()

    def checks(self) -> list[tuple[str, bool, str]]:
        return super().checks() + [
            ("thresholds", len(self.thresholds) == len(self.refinement_steps),
             f"must have one value per refinement step ({len(self.refinement_steps)})"),
            ("softmax_scale", self.softmax_scale > 0, "must be > 0"),
        ]

    @property
    def needs_tokens(self) -> bool:
        return True

    def objective(self, adapter, prompts, prompt_index, tokens, diagnostics) -> "AttendExciteObjective":
        return AttendExciteObjective(self, adapter, prompts, prompt_index, tokens, diagnostics)

    def _target(self, step: int, n: int) -> float | None:
        r = self.refinement_plan(n).get(step)
        return None if r is None else 1.0 - self.thresholds[r]

    def _regular(self, step: int, n: int) -> bool:
        return self.schedule(n)[step] > (self.refinement_iterations if step in self.refinement_plan(n) else 0)

    def should_update(self, step, iteration, loss, num_inference_steps):
        n = num_inference_steps
        target = self._target(step, n)
        if target is None or iteration > 0 or self._regular(step, n):
            return super().should_update(step, iteration, loss, n)
        return loss > target  # a refinement step without a regular update: refine only above the target

    def updates_left(self, step, iteration, loss, left, num_inference_steps):
        """At a refinement step (A&E's ``_perform_iterative_refinement_step``): below the target at once,
        the first update was the regular one; otherwise refine (each update checks the loss it was
        computed from) until below the target or ``refinement_iterations`` are done, then one regular update."""
        n = num_inference_steps
        target = self._target(step, n)
        if target is None:
            return left - 1
        regular = int(self._regular(step, n))
        met = loss <= target
        new = torch.where(met | (iteration + 1 >= self.refinement_iterations), torch.full_like(left, regular), left - 1)
        if regular:
            new = torch.where(left == 1, torch.zeros_like(left), new)  # that was the regular update
        if iteration == 0:
            new = torch.where(met, torch.zeros_like(left), new)  # no refinement needed
        return new


class AttendExciteObjective:
    """The subjects' key positions for every image, and A&E's loss over the recorded maps."""

    def __init__(self, config: AttendExciteConfig, adapter: Any, prompts: list[str], prompt_index: list[int],
                 tokens: list[list[list[str]]] | None, diagnostics: Diagnostics) -> None:
        self.config = config
        self.tokens, texts, located = told_tokens("attend-excite", "object words", adapter, prompts, prompt_index, tokens,
                                                  diagnostics)
        # the object of each group is its last word; every piece of it is a subject token
        positions = [[int(text.keep[c]) for words in groups for c in words[-1]] for text, groups in zip(texts, located)]
        self.subjects, self.subject_mask = per_image(positions, prompt_index, adapter.device)
        self.active = self.subject_mask.any(-1)
        self.text_mask = None  # [B, s], once the key length is known
        diagnostics.notes.append("attend-excite subjects: " + "; ".join(
            " ".join(text.tokens[c] for words in groups for c in words[-1]) for text, groups in zip(texts, located)))

    def _text_mask(self, s: int, device: torch.device) -> torch.Tensor:
        if self.config.normalize_eot:
            mask = torch.zeros(self.tokens.keep.shape[0], s, dtype=torch.bool, device=device)
            return mask.scatter(1, self.tokens.keep, self.tokens.mask)
        mask = torch.zeros(s, dtype=torch.bool, device=device)
        mask[1: s - 1] = True  # A&E and diffusers: attention_maps[:, :, 1:-1]
        return mask.expand(self.tokens.keep.shape[0], s)

    def loss(self, A: torch.Tensor, map_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.text_mask is None or self.text_mask.shape[1] != A.shape[-1]:
            self.text_mask = self._text_mask(A.shape[-1], A.device)
        cfg = self.config
        return attend_excite_loss(A, self.subjects, self.subject_mask, self.text_mask, *map_size,
                                  scale=cfg.softmax_scale, sigma=cfg.sigma, kernel_size=cfg.kernel_size)
