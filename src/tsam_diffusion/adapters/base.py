"""What T-SAM needs to know about a model family, and nothing more.

An adapter wraps one loaded diffusers pipeline and answers: how to encode prompts, where the text
encoder's self-attention comes from and which of its positions are content tokens, which denoiser
layers are cross-attention at a given image size, how to run the denoiser (with classifier-free
guidance for sampling, conditional branch only for a T-SAM update) and how to decode latents.
The sampling loop (``tsam_diffusion.pipeline``) and the math (``tsam_diffusion.functional``) are
written against this interface only.
"""
from __future__ import annotations

import copy
import inspect
import warnings
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator

import torch
from diffusers.models.attention_processor import Attention
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import retrieve_timesteps


def scheduler_step_kwargs(scheduler: Any, generator: Any, eta: float = 0.0) -> dict[str, Any]:
    """The optional ``eta``/``generator`` arguments a scheduler's ``step`` takes (as diffusers' pipelines pass them)."""
    params = inspect.signature(scheduler.step).parameters
    return {k: v for k, v in (("eta", eta), ("generator", generator)) if k in params}


@contextmanager
def eager_attention(model: torch.nn.Module) -> Iterator[None]:
    """Switch a transformers model to eager attention (which returns probabilities) for the block."""
    before = getattr(model.config, "_attn_implementation", None)
    if before in (None, "eager"):
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)


def truncated(p: int, length: int, limit: int, kept: int) -> bool:
    """Whether prompt ``p`` (``length`` tokens) exceeds the encoder's ``limit``; warns once per call if so."""
    if length <= limit:
        return False
    warnings.warn(f"prompt {p} is longer than the text encoder's limit of {limit} tokens and was truncated (as "
                  f"diffusers does); T-SAM uses the {kept} tokens kept", stacklevel=4)
    return True


@dataclass
class PromptText:
    """One prompt as the text encoder saw it."""

    tokens: list[str]  # the content tokens, in order
    keep: torch.Tensor  # their positions in the encoder's (and the cross-attention key) sequence
    attentions: torch.Tensor  # self-attention probabilities [L, H, N, N]
    truncated: bool = False
    hidden: torch.Tensor | None = None  # the encoder's last hidden states [N, d] (analysis: ``--embeddings encoder-output``)


@dataclass
class CrossAttentionLayer:
    name: str
    module: Attention
    height: int  # query map size at the requested image size
    width: int
    # factory(recorder, original processor) of the processor that records this layer's maps, for layers
    # that are not plain cross-attention (joint attention, ``adapters.joint``); None: the recorder's own
    recording: Callable[[Any, Any], Any] | None = None

    @property
    def queries(self) -> int:
        return self.height * self.width


@dataclass
class Conditioning:
    """Prompt embeddings: ``cond`` for the update pass, ``embeds`` (uncond + cond, or cond) for sampling."""

    cond: torch.Tensor
    embeds: torch.Tensor
    extra: dict[str, Any]


class ModelAdapter(ABC):
    """Base class of the model-family adapters; see the module docstring."""

    pipeline_classes: ClassVar[tuple[type, ...]] = ()
    # or their class names (matched along the pipeline's MRO), for families whose diffusers modules are
    # imported only once such a pipeline exists (SD3, Flux: importing them is slow and noisy)
    pipeline_names: ClassVar[tuple[str, ...]] = ()
    label: ClassVar[str] = ""  # the pipelines it supports, for error messages
    bidirectional: ClassVar[bool] = False  # the text encoder attends both ways (T5): appendix B.2
    # What a caller gets when it names none: the T-SAM preset (``tsam="default"``, ``tsam generate``),
    # denoising steps and classifier-free guidance scale the family is meant to be sampled with.
    default_preset: ClassVar[str] = "sd-tifa"
    default_steps: ClassVar[int] = 50
    default_guidance_scale: ClassVar[float] = 7.5
    # The cross-attention layers guidance reads when its config names none (indices into
    # ``cross_attention_layers``); None: those with ``M`` queries (``guidance.select_layers``).
    default_layers: ClassVar[tuple[int, ...] | None] = None
    # Options of the family's own diffusers pipeline that sampling honours (name -> default), given
    # as keyword arguments to ``TSAMPipeline.__call__`` (PixArt: ``use_resolution_binning``, ...).
    call_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.options: dict[str, Any] = dict(self.call_options)

    def configured(self, **options: Any) -> "ModelAdapter":
        """A copy of this adapter with some ``call_options`` set (for one sampling call)."""
        unknown = sorted(set(options) - set(self.call_options))
        if unknown:
            takes = ", ".join(sorted(self.call_options)) or "none"
            raise TypeError(f"unknown argument(s) {', '.join(unknown)} for {self.label}; its options are: {takes}")
        new = copy.copy(self)
        new.options = {**self.options, **options}
        return new

    def warn_unknown_tokens(self, prompts: list[str]) -> None:
        """Warn once per call about prompts with text the tokenizer reads as its unknown token (emoji
        or other characters outside a WordPiece vocabulary): the model sees no meaning there."""
        tokenizer = getattr(self.pipe, "tokenizer", None)
        unk = getattr(tokenizer, "unk_token_id", None)
        if tokenizer is None or unk is None:
            return
        fast = getattr(tokenizer, "is_fast", False)
        special = {getattr(tokenizer, f"{name}_token_id", None) for name in ("bos", "eos", "pad", "cls", "sep")}
        if unk in special and not fast:  # e.g. CLIP's unknown token is its end-of-text token: no way to tell apart
            return
        batch = tokenizer(prompts, return_offsets_mapping=fast)
        for p, ids in enumerate(batch.input_ids):
            # with offsets, an unknown token is one that stands for text (special tokens span nothing)
            spans = [(a, b) for (a, b), i in zip(batch["offset_mapping"][p], ids) if i == unk and b > a] if fast else []
            if not spans and (fast or unk not in ids):
                continue
            what = ", ".join(repr(prompts[p][a:b]) for a, b in spans) or "some characters"
            warnings.warn(f"prompt {p} ({prompts[p][:60]!r}): the text encoder's tokenizer does not know {what} "
                          f"and reads it as {tokenizer.unk_token}; rephrase in words it knows", stacklevel=3)
            return

    def word_pieces(self, word: str) -> list[str]:
        """How the text encoder's tokenizer splits one word (to find it among ``PromptText.tokens``)."""
        return self.pipe.tokenizer.tokenize(word)

    def sampling_settings(self, num_inference_steps: int | None, guidance_scale: float | None) -> tuple[int, float]:
        """``(steps, guidance scale)``: the values given, the family's defaults where ``None``."""
        return (self.default_steps if num_inference_steps is None else num_inference_steps,
                self.default_guidance_scale if guidance_scale is None else guidance_scale)

    @classmethod
    def supports(cls, pipe: Any) -> bool:
        return isinstance(pipe, cls.pipeline_classes) or any(c.__name__ in cls.pipeline_names for c in type(pipe).__mro__)

    @property
    @abstractmethod
    def denoiser(self) -> torch.nn.Module: ...

    @property
    def device(self) -> torch.device:
        return self.pipe._execution_device

    @property
    def dtype(self) -> torch.dtype:
        return self.denoiser.dtype

    @abstractmethod
    def default_size(self) -> tuple[int, int]:
        """(height, width) in pixels when the caller gives none."""

    @property
    def size_multiple(self) -> int:
        """Image height and width must be multiples of this (8, as diffusers' pipelines check; PixArt: the
        pixels of one patch)."""
        return 8

    def sampling_size(self, height: int, width: int) -> tuple[int, int]:
        """The size sampled at for a requested one (PixArt's resolution binning); ``decode`` returns the requested one."""
        return height, width

    def timesteps(self, num_inference_steps: int, height: int, width: int) -> tuple[torch.Tensor, int]:
        """``(timesteps, num_inference_steps)`` as the diffusers pipeline sets them (flow-matching families:
        their sigmas and resolution-dependent shift ``mu``)."""
        return retrieve_timesteps(self.pipe.scheduler, num_inference_steps, self.device)

    def before_loop(self) -> None:
        """What the diffusers pipeline does to its scheduler right before the denoising loop (default: nothing)."""

    @abstractmethod
    def text_attention(self, prompts: list[str]) -> list[PromptText]:
        """Run the text encoder once with attention outputs; content tokens and probabilities per prompt."""

    @abstractmethod
    def encode_prompt(
        self, prompts: list[str], negative_prompt: str | list[str] | None, num_images_per_prompt: int, guidance_scale: float,
        size: tuple[int, int] | None = None,
    ) -> Conditioning:
        """Prompt embeddings and every other condition the denoiser takes, built once per call; ``size``
        (height, width sampled at; default ``default_size()``) for families conditioned on it (SDXL, PixArt-alpha 1024)."""

    @abstractmethod
    def prepare_latents(
        self, batch: int, height: int, width: int, generator: Any, latents: torch.Tensor | None
    ) -> torch.Tensor: ...

    @abstractmethod
    def cross_attention_layers(self, height: int, width: int) -> list[CrossAttentionLayer]:
        """Every cross-attention layer of the denoiser with its query map size at this image size."""

    @abstractmethod
    def predict(self, latents: torch.Tensor, t: torch.Tensor, cond: Conditioning, guidance_scale: float) -> torch.Tensor:
        """The guided model output the scheduler steps with, exactly as the diffusers pipeline computes it."""

    @abstractmethod
    def forward_cond(self, latents: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> None:
        """One denoiser pass on the conditional branch only (its maps are recorded; output unused)."""

    def step_kwargs(self, generator: Any) -> dict[str, Any]:
        """Extra keyword arguments of ``scheduler.step``."""
        return scheduler_step_kwargs(self.pipe.scheduler, generator)

    def scheduler_step(self, noise_pred: torch.Tensor, t: torch.Tensor, latents: torch.Tensor, step_kwargs: dict[str, Any],
                       num_inference_steps: int) -> torch.Tensor:
        """The next latents from the scheduler, as the diffusers pipeline takes them."""
        return self.pipe.scheduler.step(noise_pred, t, latents, **step_kwargs, return_dict=False)[0]

    @abstractmethod
    def decode(self, latents: torch.Tensor, output_type: str, generator: Any, cond: Conditioning,
               size: tuple[int, int]) -> Any:
        """Images of the requested ``size`` (height, width) from the final latents."""
