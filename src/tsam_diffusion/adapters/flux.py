"""FLUX.1 (dev, schnell): T5 text sequence (CLIP only pooled), joint-attention MMDiT (``FluxTransformer2DModel``).

The joint sequence is ``[text, image]``: T5's ``max_sequence_length`` positions (512 by default,
unmasked) then the packed 2x2 latent patches (64x64 at 1024px), with rotary embeddings on both.
``A`` is the image-to-text block of a double-stream block's ``attn``, renormalised over the text
keys (``adapters.joint``, ``docs/design/mmdit.md``), averaged over the last five double-stream
blocks by default (14-18 of 19); an update pass stops there, so the 38 single-stream blocks never
run for an update. T: T5's self-attention over its tokens before ``</s>`` (text comes first, so
positions 0..k-1 of the joint text keys), bidirectional: appendix B.2's ``tril((T' + T'^T) / 2)``.

FLUX.1-dev is guidance-distilled: ``guidance_scale`` (3.5) is an input of the transformer, not
classifier-free guidance, so sampling and the update pass are the same single pass. With
``true_cfg_scale > 1`` and a ``negative_prompt`` a second, negative pass is added as in diffusers.
Sampling reproduces diffusers' ``FluxPipeline`` call by call (its sigmas, the resolution-dependent
shift ``mu``, packing, ``set_begin_index(0)``); IP-Adapter is not supported. schnell (no guidance
embedding) defaults to 4 steps.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from diffusers.models.embeddings import apply_rotary_emb

from .base import Conditioning, PromptText
from .mmdit import JointAttentionAdapter
from .t5 import t5_text_attention


def flux_heads(attn: Any, t: torch.Tensor, kind: str, args: tuple[Any, ...], n_text: int) -> torch.Tensor:
    """``FluxAttnProcessor``'s per-head queries or keys: normalised, then the rotary embedding of their own
    positions in the joint sequence (text first: text keys ``0..n_text-1``, image tokens after)."""
    norm = {"q": attn.norm_q, "k": attn.norm_k, "added_k": attn.norm_added_k}[kind]
    t = norm(t.unflatten(-1, (-1, attn.head_dim)))
    rotary = args[0] if args else None
    if rotary is not None:
        part = slice(0, n_text) if kind == "added_k" else slice(n_text, None)
        t = apply_rotary_emb(t, (rotary[0][part], rotary[1][part]), sequence_dim=1)
    return t.transpose(1, 2)


class FluxAdapter(JointAttentionAdapter):
    pipeline_names = ("FluxPipeline",)
    label = "FluxPipeline (FLUX.1)"
    bidirectional = True  # T5 attends both ways: appendix B.2
    default_preset = "flux"
    default_steps = 28  # diffusers' default (FLUX.1-dev); 4 for schnell (see sampling_settings)
    default_guidance_scale = 3.5
    heads = staticmethod(flux_heads)
    call_options = {"max_sequence_length": 512, "true_cfg_scale": 1.0}

    def configured(self, **options: Any) -> "FluxAdapter":
        new = super().configured(**options)
        if not 1 <= new.options["max_sequence_length"] <= 512:
            raise ValueError(f"max_sequence_length must be 1-512, got {new.options['max_sequence_length']}")
        return new

    @property
    def _distilled(self) -> bool:
        return bool(self.pipe.transformer.config.guidance_embeds)

    def sampling_settings(self, num_inference_steps, guidance_scale):
        if num_inference_steps is None and not self._distilled:
            num_inference_steps = 4  # schnell: timestep-distilled, sampled in 1-4 steps
        return super().sampling_settings(num_inference_steps, guidance_scale)

    @property
    def default_layers(self) -> tuple[int, ...]:  # type: ignore[override]
        n = len(self.pipe.transformer.transformer_blocks)
        return tuple(range(max(0, n - 5), n))  # the last five double-stream blocks (14-18 of 19)

    @property
    def size_multiple(self) -> int:
        return self.pipe.vae_scale_factor * 2  # 2x2 latent patches

    def text_attention(self, prompts: list[str]) -> list[PromptText]:
        return t5_text_attention(self.pipe.tokenizer_2, self.pipe.text_encoder_2, prompts, self.options["max_sequence_length"],
                                 self.device, masked=False)

    def word_pieces(self, word: str) -> list[str]:
        return self.pipe.tokenizer_2.tokenize(word)

    def _encode(self, prompts: list[str], num_images_per_prompt: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.pipe.encode_prompt(prompt=prompts, prompt_2=None, device=self.device, num_images_per_prompt=num_images_per_prompt,
                                       max_sequence_length=self.options["max_sequence_length"])

    def encode_prompt(self, prompts, negative_prompt, num_images_per_prompt, guidance_scale, size=None) -> Conditioning:
        embeds, pooled, text_ids = self._encode(prompts, num_images_per_prompt)
        height, width = size or self.default_size()
        cell = self.size_multiple
        extra: dict[str, Any] = {"pooled": pooled, "text_ids": text_ids, "negative": None,
                                 "img_ids": self.pipe._prepare_latent_image_ids(1, height // cell, width // cell, self.device,
                                                                                embeds.dtype),
                                 "guidance": torch.full([1], guidance_scale, device=self.device, dtype=torch.float32)
                                 if self._distilled else None}
        if self.options["true_cfg_scale"] > 1 and negative_prompt is not None:
            negative = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
            extra["negative"] = self._encode(negative, num_images_per_prompt)
        return Conditioning(cond=embeds, embeds=embeds, extra=extra)

    def prepare_latents(self, batch, height, width, generator, latents):
        dtype = self.pipe.text_encoder.dtype if self.pipe.text_encoder is not None else self.dtype
        return self.pipe.prepare_latents(batch, self.pipe.transformer.config.in_channels // 4, height, width, dtype,
                                         self.device, generator, latents)[0]

    def timesteps(self, num_inference_steps, height, width):
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps

        scheduler = self.pipe.scheduler
        sigmas = None if scheduler.config.get("use_flow_sigmas", False) else np.linspace(
            1.0, 1 / num_inference_steps, num_inference_steps)
        cell = self.size_multiple
        mu = calculate_shift((height // cell) * (width // cell), scheduler.config.get("base_image_seq_len", 256),
                             scheduler.config.get("max_image_seq_len", 4096), scheduler.config.get("base_shift", 0.5),
                             scheduler.config.get("max_shift", 1.15))
        return retrieve_timesteps(scheduler, num_inference_steps, self.device, sigmas=sigmas, mu=mu)

    def before_loop(self) -> None:
        self.pipe.scheduler.set_begin_index(0)

    def _transformer(self, x: torch.Tensor, t: torch.Tensor, text: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                     cond: Conditioning, context: str) -> torch.Tensor:
        embeds, pooled, text_ids = text
        guidance = cond.extra["guidance"]
        timestep = t.expand(x.shape[0]).to(x.dtype)
        with self.pipe.transformer.cache_context(context):
            return self.pipe.transformer(hidden_states=x, timestep=timestep / 1000,
                                         guidance=None if guidance is None else guidance.expand(x.shape[0]),
                                         pooled_projections=pooled, encoder_hidden_states=embeds, txt_ids=text_ids,
                                         img_ids=cond.extra["img_ids"], joint_attention_kwargs=None, return_dict=False)[0]

    def _text(self, cond: Conditioning) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return cond.cond, cond.extra["pooled"], cond.extra["text_ids"]

    def predict(self, latents, t, cond, guidance_scale):
        noise_pred = self._transformer(latents, t, self._text(cond), cond, "cond")
        if cond.extra["negative"] is not None:
            neg_noise_pred = self._transformer(latents, t, cond.extra["negative"], cond, "uncond")
            true_cfg_scale = self.options["true_cfg_scale"]
            noise_pred = neg_noise_pred + true_cfg_scale * (noise_pred - neg_noise_pred)
        return noise_pred

    def forward_cond(self, latents, t, cond):
        self._transformer(latents, t, self._text(cond), cond, "cond")

    def decode(self, latents, output_type, generator, cond, size):
        pipe = self.pipe
        image = latents if output_type == "latent" else self.decode_latents(
            pipe._unpack_latents(latents, size[0], size[1], pipe.vae_scale_factor), output_type)
        pipe.maybe_free_model_hooks()
        return image
