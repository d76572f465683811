"""``TSAMPipeline``: a diffusers text-to-image pipeline sampled with T-SAM guidance.

The sampling loop below is diffusers' own (same calls, same order, so that without guidance the
output is bitwise what the wrapped pipeline gives), with one addition: at the scheduled early
steps the latent first takes gradient steps of the guidance method (``Guidance.step``; T-SAM's
eq. 15 by default, or a baseline: ``method="attend-excite"``, see ``tsam_diffusion.methods``).

Step ``k`` is the ``k``-th iteration of the loop over ``scheduler.timesteps``, as in the authors'
code; PNDM (SD 1.5's default) makes N + 1 iterations for N steps, and its last one is never
updated; for second-order schedulers (Heun, DPM2) only the first stage of a step is updated.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from .adapters import adapter_for
from .diagnostics import Diagnostics
from .functional import step_sizes
from .guidance import Guidance
from .loading import load_pipeline
from .methods import GuidanceConfig, resolve_method
from .methods.words import per_prompt
from .recording import MapRecording


@dataclass
class TSAMOutput:
    images: Any  # list of PIL images, np.ndarray or torch.Tensor, by output_type
    diagnostics: Diagnostics


class TSAMPipeline:
    """T-SAM sampling for a loaded diffusers pipeline (``TSAMPipeline(pipe)``) or a model id / folder.

    >>> pipe = TSAMPipeline.from_pretrained("stable-diffusion-v1-5/stable-diffusion-v1-5").to("cuda")
    >>> out = pipe("a black car and a white clock", generator=torch.Generator("cuda").manual_seed(0))
    >>> out.images[0].save("car.png"); out.diagnostics.losses
    """

    def __init__(self, pipe: Any) -> None:
        self.adapter = adapter_for(pipe)  # TypeError for unsupported pipelines
        self.pipe = pipe

    @classmethod
    def from_pretrained(cls, model: str, **kwargs: Any) -> "TSAMPipeline":
        """Load a diffusers pipeline from a hub id, a local folder, or a built-in name (``tiny-sd``)."""
        return cls(load_pipeline(model, **kwargs))

    def to(self, *args: Any, **kwargs: Any) -> "TSAMPipeline":
        self.pipe.to(*args, **kwargs)
        return self

    @property
    def device(self) -> torch.device:
        return self.adapter.device

    def progress_bar(self, **kwargs: Any):
        return self.pipe.progress_bar(**kwargs)

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        self.pipe.set_progress_bar_config(**kwargs)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        *,
        method: GuidanceConfig | str | None = "default",
        tokens: Any = None,
        tsam: GuidanceConfig | str | None = "default",
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        negative_prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        record_maps: Sequence[int] | None = None,
        **options: Any,
    ) -> TSAMOutput:
        """Generate images with a guidance method, or none.

        ``method`` is a method's config (``TSAMConfig``, ``AttendExciteConfig``, ...), a name
        (``"tsam"``, ``"tsam:sd-ae"``, ``"attend-excite"``: ``tsam_diffusion.methods.METHODS``),
        ``"default"`` (T-SAM with the model family's preset) or ``None`` (plain sampling). ``tsam=``
        is the same argument under its earlier name. ``tokens`` names the prompt's objects for the
        methods that need them (A&E, CONFORM; T-SAM needs none): ``"car,clock"``,
        ``"black car|white clock"`` or ``[["black", "car"], ["white", "clock"]]`` for every prompt,
        or a list with one of those per prompt.

        ``"default"``, and ``None`` for ``num_inference_steps`` and ``guidance_scale``, take the model
        family's own values (``adapter.default_preset`` etc.: 50 steps, scale 7.5 and ``sd-tifa`` for
        Stable Diffusion; 50 steps, scale 5 and ``sdxl`` for SDXL; 50 steps, scale 4.5 and ``pixart`` for
        PixArt; 28 steps, scale 7 and ``sd3`` for SD3; 28 steps, guidance 3.5 and ``flux`` for FLUX.1-dev
        (4 steps for schnell); 25 steps, scale 4 and ``mini`` for tsam-mini).

        ``options`` are the family's own pipeline options (``adapter.call_options``), with the
        diffusers pipeline's defaults: for PixArt ``use_resolution_binning``, ``clean_caption`` and
        ``max_sequence_length``; for SDXL ``guidance_rescale``, ``original_size``, ``crops_coords_top_left``,
        ``target_size`` and ``text_attention``; for SD3 ``text_attention`` (``"clip"``/``"t5"``),
        ``max_sequence_length`` and ``mu``; for Flux ``max_sequence_length`` and ``true_cfg_scale``.

        ``record_maps``: denoising steps (0-based loop steps, as ``TSAMConfig.update_steps``) at which
        to record the content tokens' cross-attention maps (eq. 6, the layers the method reads, by
        default the family's) into ``diagnostics.maps[step]``, ``[B, M, n]``; one extra conditional
        denoiser pass per step, the images unchanged (``tsam_diffusion.recording``).
        """
        prompts = _check_prompts(prompt)
        adapter = self.adapter.configured(**options)  # TypeError naming the options the family takes
        adapter.warn_unknown_tokens(prompts)
        if not (isinstance(tsam, str) and tsam == "default"):
            if not (isinstance(method, str) and method == "default"):
                raise TypeError("give method= or its earlier name tsam=, not both")
            method = tsam
        config = resolve_method(method, self.adapter.default_preset)
        token_groups = per_prompt(tokens, len(prompts))
        num_inference_steps, guidance_scale = adapter.sampling_settings(num_inference_steps, guidance_scale)
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be >= 1, got {num_images_per_prompt}")
        default_h, default_w = adapter.default_size()
        size = (height or default_h, width or default_w)  # what the caller gets
        height, width = adapter.sampling_size(*size)  # what is sampled (PixArt: the nearest aspect-ratio bin)
        if height % adapter.size_multiple or width % adapter.size_multiple:
            raise ValueError(f"height and width must be multiples of {adapter.size_multiple} for this model, got {height}x{width}")
        scheduler = self.pipe.scheduler
        prompt_index = [p for p in range(len(prompts)) for _ in range(num_images_per_prompt)]
        diagnostics = Diagnostics(prompts, [], [], prompt_index, config.to_dict() if config else None)

        # 1. Prompt embeddings, timesteps and initial noise, exactly as the diffusers pipeline.
        cond = adapter.encode_prompt(prompts, negative_prompt, num_images_per_prompt, guidance_scale, (height, width))
        timesteps, num_inference_steps = adapter.timesteps(num_inference_steps, height, width)
        latents = adapter.prepare_latents(len(prompt_index), height, width, generator, latents)
        extra_step_kwargs = adapter.step_kwargs(generator)

        # 2. Guidance: the method's objective (T-SAM: T per prompt, eq. 2-3), the layers read (eq. 6),
        # the update plan and the step sizes (eq. 15), spanning len(timesteps) as the authors' code and
        # A&E do (51 entries for PNDM's 50 steps; second-order schedulers: one per step).
        order = getattr(scheduler, "order", 1)
        guidance = None
        if config is not None and config.enabled:
            guidance = Guidance(adapter, config, prompts, prompt_index, height, width, diagnostics, token_groups)
            if not guidance.any_active:
                guidance = None
        plan = config.schedule(num_inference_steps) if guidance else [0] * num_inference_steps
        span = len(timesteps) if order == 1 else num_inference_steps
        recording = None
        if record_maps:
            recording = MapRecording(adapter, list(record_maps), span, prompts, prompt_index, height, width, diagnostics,
                                     config)
        alphas = step_sizes(config.alpha, span, config.step_size_schedule) if guidance else []

        # 3. Denoising loop.
        num_warmup_steps = max(len(timesteps) - num_inference_steps * order, 0)
        adapter.before_loop()
        step = -1
        with (guidance.recorder.install() if guidance else nullcontext()), \
                (recording.install() if recording else nullcontext()), _frozen(adapter.denoiser), \
                _checkpointing(adapter.denoiser, bool(guidance and config.checkpointing)), \
                self.pipe.progress_bar(total=num_inference_steps) as progress:
            for i, t in enumerate(timesteps):
                if getattr(scheduler, "state_in_first_order", True):  # second-order schedulers: first stage only
                    step += 1
                    if guidance and step < num_inference_steps and plan[step]:  # PNDM: N + 1 iterations, the last never
                        latents = guidance.step(latents, t, cond, step, plan[step], alphas[step], num_inference_steps)
                    if recording:
                        recording(step, latents, t, cond)
                noise_pred = adapter.predict(latents, t, cond, guidance_scale)
                latents = adapter.scheduler_step(noise_pred, t, latents, extra_step_kwargs, num_inference_steps)
                if i == len(timesteps) - 1 or ((i + 1) > num_warmup_steps and (i + 1) % order == 0):
                    progress.update()

        if guidance:
            guidance.finish()
        images = adapter.decode(latents, output_type, generator, cond, size)
        return TSAMOutput(images=images, diagnostics=diagnostics.to("cpu"))


def _check_prompts(prompt: str | list[str]) -> list[str]:
    prompts = [prompt] if isinstance(prompt, str) else list(prompt) if isinstance(prompt, (list, tuple)) else None
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompt must be a non-empty string or a non-empty list of strings, got {prompt!r}")
    for p, text in enumerate(prompts):
        if not text.strip():
            raise ValueError(f"prompt {p} is empty or whitespace only; give a text to generate from")
    return prompts


@contextmanager
def _frozen(module: torch.nn.Module) -> Iterator[None]:
    """Parameters do not require grad while sampling (only the latent does during an update)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@contextmanager
def _checkpointing(module: torch.nn.Module, enable: bool) -> Iterator[None]:
    """Gradient checkpointing of the denoiser for the block (it only acts where grad is enabled: updates)."""
    if not enable or getattr(module, "is_gradient_checkpointing", True):
        yield
        return
    module.enable_gradient_checkpointing()
    try:
        yield
    finally:
        module.disable_gradient_checkpointing()
