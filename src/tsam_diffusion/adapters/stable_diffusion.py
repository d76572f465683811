"""Stable Diffusion 1.x / 2.x: CLIP text encoder (causal), UNet denoiser."""
from __future__ import annotations

from typing import Any

import torch
from diffusers import StableDiffusionPipeline

from .base import Conditioning, CrossAttentionLayer, ModelAdapter, PromptText
from .clip import clip_text_attention
from .unet import unet_cross_attention_layers


class StableDiffusionAdapter(ModelAdapter):
    pipeline_classes = (StableDiffusionPipeline,)
    label = "StableDiffusionPipeline (SD 1.x/2.x)"
    bidirectional = False  # CLIP's text encoder is causal

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.pipe.unet

    def default_size(self) -> tuple[int, int]:
        size = self.pipe.unet.config.sample_size
        h, w = (size, size) if isinstance(size, int) else size
        return h * self.pipe.vae_scale_factor, w * self.pipe.vae_scale_factor

    def text_attention(self, prompts: list[str]) -> list[PromptText]:
        return clip_text_attention(self.pipe.tokenizer, self.pipe.text_encoder, prompts, self.device)

    def encode_prompt(self, prompts, negative_prompt, num_images_per_prompt, guidance_scale, size=None) -> Conditioning:
        do_cfg = self._do_cfg(guidance_scale)
        cond, uncond = self.pipe.encode_prompt(prompts, self.device, num_images_per_prompt, do_cfg, negative_prompt)
        embeds = torch.cat([uncond, cond]) if do_cfg else cond
        extra: dict[str, Any] = {"timestep_cond": None}
        if self.pipe.unet.config.time_cond_proj_dim is not None:
            w = torch.tensor(guidance_scale - 1).repeat(cond.shape[0])
            extra["timestep_cond"] = self.pipe.get_guidance_scale_embedding(
                w, embedding_dim=self.pipe.unet.config.time_cond_proj_dim
            ).to(device=self.device, dtype=cond.dtype)
        return Conditioning(cond=cond, embeds=embeds, extra=extra)

    def prepare_latents(self, batch, height, width, generator, latents):
        channels = self.pipe.unet.config.in_channels
        dtype = self.pipe.text_encoder.dtype if self.pipe.text_encoder is not None else self.dtype
        return self.pipe.prepare_latents(batch, channels, height, width, dtype, self.device, generator, latents)

    def step_kwargs(self, generator):
        return self.pipe.prepare_extra_step_kwargs(generator, 0.0)

    def cross_attention_layers(self, height: int, width: int) -> list[CrossAttentionLayer]:
        f = self.pipe.vae_scale_factor
        return unet_cross_attention_layers(self.pipe.unet, int(height) // f, int(width) // f)

    def predict(self, latents, t, cond, guidance_scale):
        do_cfg = self._do_cfg(guidance_scale)
        latent_model_input = torch.cat([latents] * 2) if do_cfg else latents
        latent_model_input = self.pipe.scheduler.scale_model_input(latent_model_input, t)
        noise_pred = self.pipe.unet(
            latent_model_input, t, encoder_hidden_states=cond.embeds, timestep_cond=cond.extra["timestep_cond"], return_dict=False
        )[0]
        if do_cfg:
            noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
            noise_pred = noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond)
        return noise_pred

    def forward_cond(self, latents, t, cond):
        latent_model_input = self.pipe.scheduler.scale_model_input(latents, t)
        self.pipe.unet(latent_model_input, t, encoder_hidden_states=cond.cond, timestep_cond=cond.extra["timestep_cond"], return_dict=False)

    def decode(self, latents, output_type, generator, cond, size):
        pipe = self.pipe
        if output_type == "latent":
            image, nsfw = latents, None
        else:
            image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False, generator=generator)[0]
            image, nsfw = pipe.run_safety_checker(image, self.device, cond.cond.dtype)
        denormalize = [True] * image.shape[0] if nsfw is None else [not x for x in nsfw]
        image = pipe.image_processor.postprocess(image, output_type=output_type, do_denormalize=denormalize)
        pipe.maybe_free_model_hooks()
        return image

    def _do_cfg(self, guidance_scale: float) -> bool:
        return guidance_scale > 1 and self.pipe.unet.config.time_cond_proj_dim is None
