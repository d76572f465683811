"""What every guidance method shares: when to update the latent, by how much, and the interface of its loss.

A guidance method (T-SAM, Attend-and-Excite, ...) is a frozen ``GuidanceConfig`` subclass that
holds its settings and builds an ``Objective``: a loss over the recorded cross-attention maps,
one value per image. The sampling loop (``pipeline.py``) and the update (``guidance.py``) know
only this interface; each method's own module knows its equations.

The schedule fields:
    alpha: step size of the latent update ``z_t' = z_t - alpha_i * grad L`` (T-SAM eq. 15; A&E's
        ``scale_factor``); 0 disables guidance.
    update_steps: denoising steps that get one gradient update, counted on a ``reference_steps``
        schedule (default 0..24 of 50).
    refinement_steps: steps that first get up to ``refinement_iterations`` extra updates, counted
        on the same reference schedule (how a method stops early is its ``updates_left``).
    step_size_schedule: ``"sqrt-decay"`` (``alpha * sqrt(linspace(1, 0.5, len(timesteps)))[i]``)
        or ``"constant"``.
    sigma, kernel_size: Gaussian smoothing of the cross-attention maps.
    M: query count of the cross-attention layers whose maps are read (256 = 16x16 for SD at 512px).
    layers: the cross-attention layers to read, by module name or by index among the denoiser's
        cross-attention layers (PixArt: the block index); overrides ``M`` and the model family's
        default (``ModelAdapter.default_layers``).
    checkpointing: gradient checkpointing of the update pass (less memory, more time).
    reference_steps: the schedule length the step indices refer to. For ``N`` inference steps,
        step ``k`` gets the updates of reference step ``floor(k * reference_steps / N)``, and a
        refinement step ``r`` maps to ``round(r * N / reference_steps)``: the same fractions of
        the schedule (with 25 steps, updates at 0..24 of 50 become 0..12, refinement at 0, 10, 20
        becomes 0, 5, 10).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

import torch

from ..diagnostics import Diagnostics


class ContentTokens:
    """The prompts' content tokens (no BOS/EOS/padding) as the encoder saw them, per image of the batch.

    ``keep[b, c]`` is the key position of content token ``c`` of image ``b``'s prompt, zero-padded
    to the longest prompt; ``lengths[b]`` its count; ``texts[p]`` the adapter's ``PromptText``.
    """

    def __init__(self, texts: list[Any], prompt_index: list[int], device: torch.device, diagnostics: Diagnostics) -> None:
        self.texts = texts
        n = max(len(t.tokens) for t in texts)
        idx = torch.as_tensor(prompt_index, device=device)
        keep = torch.zeros(len(texts), n, dtype=torch.long, device=device)
        for p, text in enumerate(texts):
            keep[p, : len(text.keep)] = text.keep.to(device)
        self.keep = keep[idx]
        self.lengths = torch.tensor([len(t.tokens) for t in texts], device=device)[idx]
        self.mask = torch.arange(n, device=device) < self.lengths[:, None]  # [B, n]
        diagnostics.tokens = [t.tokens for t in texts]
        for p, text in enumerate(texts):
            if text.truncated:
                diagnostics.notes.append(f"prompt {p} was truncated to the text encoder's limit")

    def content_maps(self, A: torch.Tensor) -> torch.Tensor:
        """The maps of the content tokens, ``[B, M, n]`` from ``[B, M, s]``, zero past each prompt's length."""
        return A.gather(-1, self.keep[:, None, :].expand(-1, A.shape[1], -1)) * self.mask[:, None, :]


def per_image(rows: list[list[int]], prompt_index: list[int], device: torch.device, fill: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """One list of integers per prompt -> ``[B, K]`` values per image (padded with ``fill``) and their mask."""
    k = max(1, max(len(r) for r in rows))
    values = torch.full((len(rows), k), fill, dtype=torch.long)
    mask = torch.zeros(len(rows), k, dtype=torch.bool)
    for p, row in enumerate(rows):
        values[p, : len(row)], mask[p, : len(row)] = torch.tensor(row, dtype=torch.long), True
    idx = torch.as_tensor(prompt_index)
    return values[idx].to(device), mask[idx].to(device)


def told_tokens(method: str, what: str, adapter: Any, prompts: list[str], prompt_index: list[int],
                tokens: list[list[list[str]]] | None, diagnostics: Diagnostics) -> tuple[ContentTokens, list[Any], list[Any]]:
    """For the methods that are told the prompt's objects: the content tokens, the adapter's texts, and
    per prompt each group's words as content-token indices (``words.locate_groups``)."""
    from .words import locate_groups

    if not tokens:
        raise ValueError(f"{method} needs the prompt's {what}: give tokens= (Python) or --tokens 'car,clock' / "
                         "--token-groups 'black car|white clock' (CLI); benchmark suites with templates give them by themselves")
    texts = adapter.text_attention(prompts)
    content = ContentTokens(texts, prompt_index, adapter.device, diagnostics)
    located = [locate_groups(groups, adapter.word_pieces, text.tokens, prompts[p])
               for p, (text, groups) in enumerate(zip(texts, tokens))]
    return content, texts, located


class Objective(Protocol):
    """A method's loss for one batch, built once per sampling call."""

    active: torch.Tensor  # [B] bool: images the method can act on (others are never moved)
    tokens: ContentTokens  # the content tokens (their maps are kept in the diagnostics)

    def loss(self, A: torch.Tensor, map_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``A``: recorded maps ``[B, M, s]`` over the whole key sequence (eq. 6). Returns the loss
        ``[B]`` in float32 and what it compared (T-SAM: ``S``), kept in the diagnostics."""

    # Optional: ``begin_step(step)``, called before the first update of each denoising step, for a
    # method whose loss reads an earlier step (CONFORM's previous maps).


@dataclass(frozen=True)
class GuidanceConfig:
    """The schedule of latent updates every method shares (see the module docstring)."""

    method: ClassVar[str] = ""  # the name it is selected by (``--method``)
    presets: ClassVar[dict[str, dict[str, Any]]] = {}  # name -> field values
    default_preset: ClassVar[str | None] = None  # what the bare method name means (None: the model's preset)

    alpha: float = 20.0
    update_steps: tuple[int, ...] = tuple(range(25))
    refinement_steps: tuple[int, ...] = ()
    refinement_iterations: int = 0
    step_size_schedule: Literal["sqrt-decay", "constant"] = "sqrt-decay"
    sigma: float = 0.5
    kernel_size: int = 3
    M: int = 256
    layers: tuple[int | str, ...] | None = None
    checkpointing: bool = False
    reference_steps: int = 50
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen dataclass)
        set_("update_steps", tuple(int(s) for s in self.update_steps))
        set_("refinement_steps", tuple(int(s) for s in self.refinement_steps))
        if self.layers is not None:
            set_("layers", tuple(self.layers) if not isinstance(self.layers, (str, int)) else (self.layers,))
        for name, ok, why in self.checks():
            if not ok:
                raise ValueError(f"{type(self).__name__}.{name} {why}, got {getattr(self, name)!r}")

    def checks(self) -> list[tuple[str, bool, str]]:
        """``(field, valid, what it must be)``; subclasses add their own."""
        return [
            ("alpha", math.isfinite(self.alpha) and self.alpha >= 0, "must be a finite number >= 0"),
            ("update_steps", all(s >= 0 for s in self.update_steps), "must be steps >= 0"),
            ("refinement_steps", all(s >= 0 for s in self.refinement_steps), "must be steps >= 0"),
            ("refinement_iterations", self.refinement_iterations >= 0, "must be >= 0"),
            ("step_size_schedule", self.step_size_schedule in ("sqrt-decay", "constant"), "must be 'sqrt-decay' or 'constant'"),
            ("sigma", self.sigma >= 0, "must be >= 0"),
            ("kernel_size", self.kernel_size >= 1 and self.kernel_size % 2 == 1, "must be an odd integer >= 1"),
            ("layers", self.layers is None or (len(self.layers) > 0 and all(
                isinstance(x, str) or (isinstance(x, int) and not isinstance(x, bool) and x >= 0) for x in self.layers)),
             "must be None or module names or indices >= 0"),
            ("M", self.M > 0 and math.isqrt(self.M) ** 2 == self.M, "must be a perfect square (e.g. 256 = 16x16)"),
            ("reference_steps", self.reference_steps >= 1, "must be >= 1"),
        ]

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "GuidanceConfig":
        """A named preset of this method, optionally with some fields overridden."""
        if name not in cls.presets:
            raise ValueError(f"unknown {cls.method} preset {name!r}; choose one of: {', '.join(sorted(cls.presets))}")
        return cls(**{**cls.presets[name], "name": name, **overrides})

    def replace(self, **changes: Any) -> "GuidanceConfig":
        return dataclasses.replace(self, **changes)

    @property
    def enabled(self) -> bool:
        return self.alpha > 0 and (bool(self.update_steps) or (bool(self.refinement_steps) and self.refinement_iterations > 0))

    @property
    def needs_tokens(self) -> bool:
        """Whether the method needs the prompt's object words (``tokens=``); T-SAM does not."""
        return False

    @property
    def uses_tokens(self) -> bool:
        """Whether the method reads ``tokens=`` when given (SynGen: instead of parsing the prompt)."""
        return self.needs_tokens

    def check_without_tokens(self) -> None:
        """Raise (saying what to install) if the method cannot run on a prompt given no ``tokens``;
        called before long runs, so that they fail at once rather than after loading a model."""
        if self.needs_tokens:
            raise ValueError(f"{self.method} needs the prompt's object words (tokens=)")

    def schedule(self, num_inference_steps: int) -> list[int]:
        """Number of updates (at most) at each of ``num_inference_steps`` denoising steps."""
        n = num_inference_steps
        updates = set(self.update_steps)
        plan = [int(math.floor(k * self.reference_steps / n)) in updates for k in range(n)]
        refine = self.refinement_plan(n)
        return [int(plan[k]) + (self.refinement_iterations if k in refine else 0) for k in range(n)]

    def refinement_plan(self, num_inference_steps: int) -> dict[int, int]:
        """``{step: index into refinement_steps}`` on a ``num_inference_steps`` schedule."""
        n = num_inference_steps
        return {int(round(r * n / self.reference_steps)): i for i, r in enumerate(self.refinement_steps)}

    def objective(self, adapter: Any, prompts: list[str], prompt_index: list[int], tokens: list[list[list[str]]] | None,
                  diagnostics: Diagnostics) -> Objective:
        """The method's loss for this batch (``tokens[p]``: prompt ``p``'s groups of words, if given)."""
        raise NotImplementedError

    def should_update(self, step: int, iteration: int, loss: torch.Tensor, num_inference_steps: int) -> torch.Tensor:
        """``[B]`` bool: which images take the update just computed (default: all)."""
        return torch.ones_like(loss, dtype=torch.bool)

    def updates_left(self, step: int, iteration: int, loss: torch.Tensor, left: torch.Tensor, num_inference_steps: int) -> torch.Tensor:
        """Updates each image still takes at ``step`` after update ``iteration`` (0-based) whose
        loss was ``loss``; ``left`` is the count before it. Default: one fewer."""
        return left - 1

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **dataclasses.asdict(self)}
