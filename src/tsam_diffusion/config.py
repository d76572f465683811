"""``TSAMConfig``: every knob of T-SAM guidance, validated on construction, with the paper's presets."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

PRESETS: dict[str, dict[str, Any]] = {
    # Section 5 / appendix B.2, SD v1.5 on the TIFA benchmark: one update at each of steps 0..24 of 50.
    "sd-tifa": dict(alpha=40.0, gamma=4.0),
    # Section 5 / appendix B.2, SD v1.5 on the Attend-and-Excite prompts: plus 20 refinement
    # iterations at steps 0, 10 and 20.
    "sd-ae": dict(alpha=10.0, gamma=2.0, refinement_steps=(0, 10, 20), refinement_iterations=20),
    # The bundled tsam-mini (25 DDIM steps): the best T-SAM configuration of a shapes-dev sweep
    # (docs/tsam-mini.md); never tuned on shapes-test. Its maps are nearly uniform, so S is centred.
    "mini": dict(alpha=3.0, gamma=2.0, center_maps=True),
}
"""Presets, written for a 50-step schedule (see ``TSAMConfig.schedule``). Each model family names
its default one (``ModelAdapter.default_preset``)."""


@dataclass(frozen=True)
class TSAMConfig:
    """T-SAM guidance settings.

    Attributes:
        alpha: step size of the latent update ``z_t' = z_t - alpha_i * grad L`` (eq. 15); 0 disables guidance.
        gamma: exponent on ``T`` (eq. 14).
        update_steps: denoising steps that get one gradient update, counted on a ``reference_steps``
            schedule (default 0..24 of 50).
        refinement_steps: steps that first get ``refinement_iterations`` extra updates, counted on the
            same reference schedule.
        refinement_iterations: extra updates at each refinement step.
        loss_threshold: if set, an image whose loss is at or below it is not updated, and refinement
            at a step stops as soon as every image is below it.
        step_size_schedule: ``"sqrt-decay"`` (``alpha * sqrt(linspace(1, 0.5, steps))[i]``) or ``"constant"``.
        sigma, kernel_size: Gaussian smoothing of the cross-attention maps before eq. 7.
        M: query count of the cross-attention layers whose maps are read (eq. 6); 256 = 16x16 maps
            for SD at 512px.
        loss: ``"l1"`` (eq. 14) or ``"cosine"`` (the authors' released code).
        normalize: normalisation of ``S``: ``"causal"`` (rows over ``j <= i``, like ``T``) or ``"full"``.
        center_maps: not in the paper: compare the maps' spatial patterns (``(1 + r) / 2`` with
            ``r`` their correlation) instead of eq. 7's plain cosine, for models whose maps are
            nearly uniform (``functional.similarity_matrix``'s ``center``).
        layers: explicit names of the cross-attention modules to read (overrides ``M``).
        checkpointing: gradient checkpointing of the update pass (less memory, about one more
            partial forward of time per update), for memory-bound GPUs.
        reference_steps: the schedule length the step indices refer to. For ``N`` inference steps,
            step ``k`` gets the updates of reference step ``floor(k * reference_steps / N)``, and a
            refinement step ``r`` maps to ``round(r * N / reference_steps)``: the same fractions of
            the schedule (with 25 steps, ``sd-tifa`` updates steps 0..12, ``sd-ae`` refines at 0, 5, 10).
    """

    alpha: float = 40.0
    gamma: float = 4.0
    update_steps: tuple[int, ...] = tuple(range(25))
    refinement_steps: tuple[int, ...] = ()
    refinement_iterations: int = 0
    loss_threshold: float | None = None
    step_size_schedule: Literal["sqrt-decay", "constant"] = "sqrt-decay"
    sigma: float = 0.5
    kernel_size: int = 3
    M: int = 256
    loss: Literal["l1", "cosine"] = "l1"
    normalize: Literal["causal", "full"] = "causal"
    center_maps: bool = False
    layers: tuple[str, ...] | None = None
    checkpointing: bool = False
    reference_steps: int = 50
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen dataclass)
        set_("update_steps", tuple(int(s) for s in self.update_steps))
        set_("refinement_steps", tuple(int(s) for s in self.refinement_steps))
        if self.layers is not None:
            set_("layers", tuple(self.layers))
        checks = [
            ("alpha", math.isfinite(self.alpha) and self.alpha >= 0, "must be a finite number >= 0"),
            ("gamma", math.isfinite(self.gamma) and self.gamma > 0, "must be > 0"),
            ("update_steps", all(s >= 0 for s in self.update_steps), "must be steps >= 0"),
            ("refinement_steps", all(s >= 0 for s in self.refinement_steps), "must be steps >= 0"),
            ("refinement_iterations", self.refinement_iterations >= 0, "must be >= 0"),
            ("loss_threshold", self.loss_threshold is None or self.loss_threshold >= 0, "must be >= 0 or None"),
            ("step_size_schedule", self.step_size_schedule in ("sqrt-decay", "constant"), "must be 'sqrt-decay' or 'constant'"),
            ("sigma", self.sigma >= 0, "must be >= 0"),
            ("kernel_size", self.kernel_size >= 1 and self.kernel_size % 2 == 1, "must be an odd integer >= 1"),
            ("M", self.M > 0 and math.isqrt(self.M) ** 2 == self.M, "must be a perfect square (e.g. 256 = 16x16)"),
            ("loss", self.loss in ("l1", "cosine"), "must be 'l1' or 'cosine'"),
            ("normalize", self.normalize in ("causal", "full"), "must be 'causal' or 'full'"),
            ("center_maps", isinstance(self.center_maps, bool), "must be True or False"),
            ("reference_steps", self.reference_steps >= 1, "must be >= 1"),
        ]
        for name, ok, why in checks:
            if not ok:
                raise ValueError(f"TSAMConfig.{name} {why}, got {getattr(self, name)!r}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "TSAMConfig":
        """A paper preset (``"sd-tifa"``, ``"sd-ae"``), optionally with some fields overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(sorted(PRESETS))}")
        return cls(**{**PRESETS[name], "name": name, **overrides})

    def replace(self, **changes: Any) -> "TSAMConfig":
        return dataclasses.replace(self, **changes)

    @property
    def enabled(self) -> bool:
        return self.alpha > 0 and (bool(self.update_steps) or (bool(self.refinement_steps) and self.refinement_iterations > 0))

    def schedule(self, num_inference_steps: int) -> list[int]:
        """Number of updates at each of ``num_inference_steps`` denoising steps."""
        n = num_inference_steps
        updates = set(self.update_steps)
        plan = [int(math.floor(k * self.reference_steps / n)) in updates for k in range(n)]
        refine = {int(round(r * n / self.reference_steps)) for r in self.refinement_steps}
        return [int(plan[k]) + (self.refinement_iterations if k in refine else 0) for k in range(n)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
