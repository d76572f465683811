"""What a guided sampling run did: tokens, T, and S and the loss at every update."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class UpdateRecord:
    """One gradient update of the latent (eq. 15) for the whole batch."""

    step: int  # denoising step index
    iteration: int  # 0 for the first update at this step, then 1, 2, ... (refinement)
    timestep: float | torch.Tensor  # a float once sampling is done
    step_size: float
    loss: torch.Tensor  # [B] loss of each image before the update (eq. 14)
    applied: torch.Tensor  # [B] bool: whether each image's latent was moved
    S: torch.Tensor  # [B, n, n] similarity matrix (eq. 7), zero-padded to the longest prompt
    finite: torch.Tensor  # [B] bool: loss and gradient were finite


@dataclass
class Skip:
    step: int
    iteration: int
    image: int
    reason: str


@dataclass
class Diagnostics:
    """Attached to every ``TSAMPipeline`` output as ``.diagnostics``.

    ``tokens[p]`` and ``T[p]`` belong to prompt ``p``; image ``b`` of the batch shows prompt
    ``prompt_index[b]``. ``A_first``/``A_last`` are the averaged cross-attention maps (eq. 6)
    ``[B, M, n]`` of the content tokens at the first and the last update, on a ``map_size`` grid;
    ``maps[step]`` the same at each step asked for with ``record_maps`` (``tsam_diffusion.recording``).
    """

    prompts: list[str]
    tokens: list[list[str]]
    T: list[torch.Tensor]
    prompt_index: list[int]
    config: dict[str, Any] | None
    layers: list[str] = field(default_factory=list)
    map_size: tuple[int, int] | None = None
    updates: list[UpdateRecord] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    A_first: torch.Tensor | None = None
    A_last: torch.Tensor | None = None
    maps: dict[int, torch.Tensor] = field(default_factory=dict)

    @property
    def losses(self) -> torch.Tensor:
        """``[num_updates, B]`` loss before each update."""
        if not self.updates:
            return torch.empty(0, len(self.prompt_index))
        return torch.stack([u.loss for u in self.updates])

    def S_of(self, image: int, which: int = -1) -> torch.Tensor:
        """``S`` of one image at one update (default the last), cropped to its prompt's tokens."""
        n = len(self.tokens[self.prompt_index[image]])
        return self.updates[which].S[image, :n, :n]

    def summary(self) -> dict[str, Any]:
        """Plain numbers for logs and databases."""
        losses = self.losses
        return {
            "updates": len(self.updates),
            "loss_first": losses[0].tolist() if len(losses) else None,
            "loss_last": losses[-1].tolist() if len(losses) else None,
            "skipped": len(self.skipped),
            "layers": list(self.layers),
            "notes": list(self.notes),
        }

    def to(self, device: str | torch.device) -> "Diagnostics":
        """Move every tensor (e.g. to the CPU once sampling is done)."""
        mv = lambda x: None if x is None else x.to(device)  # noqa: E731
        self.T = [mv(t) for t in self.T]
        for u in self.updates:
            u.loss, u.applied, u.S, u.finite = mv(u.loss), mv(u.applied), mv(u.S), mv(u.finite)
            u.timestep = float(u.timestep)
        self.A_first, self.A_last = mv(self.A_first), mv(self.A_last)
        self.maps = {k: mv(v) for k, v in self.maps.items()}
        return self
