"""CONFORM (Meral, Simsar, Tombari, Yanardag, CVPR 2024): contrast the maps of the prompt's objects.

Tokens of one group (an object and its attributes: ``green glasses``) are positives, tokens of other
groups negatives, in an NT-Xent (InfoNCE) loss with temperature 0.5 over their Gaussian-smoothed
16x16 cross-attention maps, each map a 256-vector compared by cosine. From the second step on, each
token's map at the previous step joins as one more positive of its group (the authors'
``add_previous_attention_maps``). Updates at steps 0..24 of 50 with step size
``20 * sqrt(linspace(1, 0.5, len(timesteps)))``, and 20 more at steps 0, 10 and 20 (no threshold),
as the authors' code and notebook (their ``softmax_normalize`` off).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..diagnostics import Diagnostics
from ..functional import smooth_maps
from .base import GuidanceConfig, per_image, told_tokens


def ntxent_loss(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent as ``pytorch_metric_learning.losses.NTXentLoss`` computes it, batched; ``[B]``.

    ``embeddings [B, N, D]``, ``labels [B, N]`` (``-1``: padding, left out). For every ordered pair
    ``(a, p)`` of different items with one label: ``-log(e^{s_ap/T} / (e^{s_ap/T} + sum_n e^{s_an/T}))``,
    ``s`` the cosine similarity and ``n`` the items of other labels; the mean over those pairs, or 0
    when an image has no positive or no negative pair.
    """
    e = embeddings.float()
    unit = e / e.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    logits = unit @ unit.transpose(-1, -2) / temperature  # [B, N, N]
    valid = labels >= 0
    same = (labels[..., :, None] == labels[..., None, :]) & valid[..., :, None] & valid[..., None, :]
    eye = torch.eye(labels.shape[-1], dtype=torch.bool, device=labels.device)
    pos = same & ~eye
    neg = ~same & valid[..., :, None] & valid[..., None, :]
    neg_lse = logits.masked_fill(~neg, float("-inf")).logsumexp(-1, keepdim=True)  # [B, N, 1] over each anchor's negatives
    per_pair = torch.logaddexp(logits, neg_lse) - logits  # -log(num / (num + sum neg))
    count = pos.sum((-1, -2))
    loss = per_pair.masked_fill(~pos, 0).sum((-1, -2)) / count.clamp_min(1)
    return torch.where((count > 0) & neg.flatten(1).any(1), loss, torch.zeros_like(loss))


@dataclass(frozen=True)
class ConformConfig(GuidanceConfig):
    """CONFORM settings: the shared schedule (``methods.base``) and these.

    Attributes:
        temperature: NT-Xent's temperature (0.5).
        previous_maps: add each token's map of the previous step as a positive (the authors' default).
        softmax_normalize: re-normalise the maps over the text tokens first (``softmax(100 * A[..., 1:-1])``,
            the pipeline's default in the authors' code; their notebook, the reference, turns it off).
    """

    method = "conform"
    presets = {"conform": {}}
    default_preset = "conform"

    alpha: float = 20.0
    refinement_steps: tuple[int, ...] = (0, 10, 20)
    refinement_iterations: int = 20
    temperature: float = 0.5
    previous_maps: bool = True
    softmax_normalize: bool = False

    def checks(self) -> list[tuple[str, bool, str]]:
        return super().checks() + [("temperature", self.temperature > 0, "must be > 0")]

    @property
    def needs_tokens(self) -> bool:
        return True

    def objective(self, adapter, prompts, prompt_index, tokens, diagnostics) -> "ConformObjective":
        return ConformObjective(self, adapter, prompts, prompt_index, tokens, diagnostics)


class ConformObjective:
    """The grouped tokens' key positions and labels, and the maps of the previous step."""

    def __init__(self, config: ConformConfig, adapter: Any, prompts: list[str], prompt_index: list[int],
                 tokens: list[list[list[str]]] | None, diagnostics: Diagnostics) -> None:
        self.config = config
        self.tokens, texts, located = told_tokens("conform", "groups of words", adapter, prompts, prompt_index, tokens,
                                                  diagnostics)
        positions, labels = [], []
        for p, (text, groups) in enumerate(zip(texts, located)):
            flat = [(int(text.keep[c]), g) for g, words in enumerate(groups) for word in words for c in word]
            positions.append([pos for pos, _ in flat])
            labels.append([g for _, g in flat])
            diagnostics.notes.append(f"conform groups of prompt {p}: " + " | ".join(
                " ".join("".join(text.tokens[c] for c in word) for word in words) for words in groups))
        self.positions, _ = per_image(positions, prompt_index, adapter.device)
        self.labels, _ = per_image(labels, prompt_index, adapter.device, fill=-1)
        self.active = (self.labels >= 0).any(-1)
        self.step, self.previous, self.latest = None, None, None

    def begin_step(self, step: int) -> None:
        """A new denoising step: the maps of the last pass of the previous one become ``previous``."""
        if step != self.step:
            self.step, self.previous = step, self.latest if self.config.previous_maps else None

    def maps(self, A: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The smoothed maps of the grouped tokens, flattened: ``[B, K, M]``."""
        A = A.float()
        if self.config.softmax_normalize:
            s = A.shape[-1]
            text = torch.zeros(s, dtype=torch.bool, device=A.device)
            text[1: s - 1] = True
            A = (A * 100).masked_fill(~text, float("-inf")).softmax(-1)
        maps = A.gather(-1, self.positions[:, None, :].expand(-1, A.shape[1], -1))  # [B, M, K]
        maps = maps.transpose(1, 2).reshape(*self.positions.shape, height, width)
        smoothed = smooth_maps(maps, sigma=self.config.sigma, kernel_size=self.config.kernel_size)
        return smoothed.flatten(-2)

    def loss(self, A: torch.Tensor, map_size: tuple[int, int]) -> tuple[torch.Tensor, None]:
        current = self.maps(A, *map_size)
        self.latest = current.detach()
        embeddings, labels = current, self.labels
        if self.previous is not None:
            embeddings = torch.cat([current, self.previous], 1)
            labels = torch.cat([self.labels, self.labels], 1)
        return ntxent_loss(embeddings, labels, self.config.temperature), None
