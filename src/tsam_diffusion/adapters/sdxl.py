"""Stable Diffusion XL: two CLIP text encoders (causal) on one token axis, UNet with added conditions.

T: SDXL's two encoders read the same tokens (their penultimate states are concatenated by feature),
and no prior work says which one's self-attention to use. By default (``text_attention="both"``)
T' is the mean of the two encoders' maps, each first averaged over its own layers and heads, then
eq. 3 as for SD (BOS, EOS and padding removed, rows renormalised); ``"first"`` (CLIP ViT-L) or
``"second"`` (OpenCLIP ViT-bigG) take one. The maps: at 1024px SDXL's cross-attention runs at
64x64 (10 layers) and 32x32 (60 layers), the preset ``sdxl`` reads the 32x32 ones (M = 1024), and
an update pass stops after the last of them (in ``up_blocks[0]``). Sampling reproduces diffusers'
``StableDiffusionXLPipeline`` call by call (pooled text embeddings and time ids as added
conditions, ``guidance_rescale``, the VAE's float16 upcast, latents mean/std, the watermark).
"""
from __future__ import annotations

from typing import Any

import torch
from diffusers import StableDiffusionXLPipeline
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import rescale_noise_cfg

from .base import Conditioning, CrossAttentionLayer, ModelAdapter, PromptText
from .clip import averaged_clip_attention
from .unet import unet_cross_attention_layers

TEXT_ATTENTION = ("both", "first", "second")


class StableDiffusionXLAdapter(ModelAdapter):
    pipeline_classes = (StableDiffusionXLPipeline,)
    label = "StableDiffusionXLPipeline (SDXL)"
    bidirectional = False  # both CLIP text encoders are causal
    default_preset = "sdxl"
    default_steps = 50
    default_guidance_scale = 5.0  # diffusers' default for SDXL
    call_options = {"text_attention": "both", "guidance_rescale": 0.0, "original_size": None,
                    "crops_coords_top_left": (0, 0), "target_size": None}

    def configured(self, **options: Any) -> "StableDiffusionXLAdapter":
        new = super().configured(**options)
        if new.options["text_attention"] not in TEXT_ATTENTION:
            raise ValueError(f"text_attention must be one of {', '.join(TEXT_ATTENTION)}, got {new.options['text_attention']!r}")
        return new

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.pipe.unet

    def default_size(self) -> tuple[int, int]:
        size = self.pipe.default_sample_size * self.pipe.vae_scale_factor
        return size, size

    def _encoders(self) -> list[tuple[Any, Any]]:
        pairs = [(self.pipe.tokenizer, self.pipe.text_encoder), (self.pipe.tokenizer_2, self.pipe.text_encoder_2)]
        which = {"both": pairs, "first": pairs[:1], "second": pairs[1:]}[self.options["text_attention"]]
        usable = [(tok, enc) for tok, enc in which if tok is not None and enc is not None]
        if not usable:
            raise ValueError(f"text_attention={self.options['text_attention']!r} names a text encoder this pipeline "
                             "does not have; use text_attention='both'")
        return usable

    def text_attention(self, prompts: list[str]) -> list[PromptText]:
        return averaged_clip_attention(self._encoders(), prompts, self.device)

    def word_pieces(self, word: str) -> list[str]:
        return (self.pipe.tokenizer or self.pipe.tokenizer_2).tokenize(word)

    def _do_cfg(self, guidance_scale: float) -> bool:
        return guidance_scale > 1 and self.pipe.unet.config.time_cond_proj_dim is None

    def encode_prompt(self, prompts, negative_prompt, num_images_per_prompt, guidance_scale, size=None) -> Conditioning:
        do_cfg = self._do_cfg(guidance_scale)
        cond, uncond, pooled, uncond_pooled = self.pipe.encode_prompt(
            prompt=prompts, device=self.device, num_images_per_prompt=num_images_per_prompt,
            do_classifier_free_guidance=do_cfg, negative_prompt=negative_prompt)
        ids = self._time_ids(size or self.default_size(), cond.dtype)
        rows = cond.shape[0]
        added = {"text_embeds": pooled, "time_ids": ids.repeat(rows, 1)}  # the update pass: conditional branch only
        # sampling: [negative, positive] pooled embeddings, and time ids repeated per image, as the pipeline does
        added_cfg = {"text_embeds": torch.cat([uncond_pooled, pooled]), "time_ids": torch.cat([ids, ids]).repeat(rows, 1)} \
            if do_cfg else added
        extra: dict[str, Any] = {"added": added_cfg, "added_cond": added, "timestep_cond": None}
        if self.pipe.unet.config.time_cond_proj_dim is not None:
            w = torch.tensor(guidance_scale - 1).repeat(rows)
            extra["timestep_cond"] = self.pipe.get_guidance_scale_embedding(
                w, embedding_dim=self.pipe.unet.config.time_cond_proj_dim).to(device=self.device, dtype=cond.dtype)
        return Conditioning(cond=cond, embeds=torch.cat([uncond, cond]) if do_cfg else cond, extra=extra)

    def prepare_latents(self, batch, height, width, generator, latents):
        dtype = (self.pipe.text_encoder_2 or self.pipe.text_encoder).dtype
        return self.pipe.prepare_latents(batch, self.pipe.unet.config.in_channels, height, width, dtype, self.device,
                                         generator, latents)

    def step_kwargs(self, generator):
        return self.pipe.prepare_extra_step_kwargs(generator, 0.0)

    def before_loop(self) -> None:
        if hasattr(self.pipe.scheduler, "set_begin_index"):
            self.pipe.scheduler.set_begin_index(0)

    def cross_attention_layers(self, height: int, width: int) -> list[CrossAttentionLayer]:
        f = self.pipe.vae_scale_factor
        return unet_cross_attention_layers(self.pipe.unet, int(height) // f, int(width) // f)

    def _time_ids(self, size: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
        """SDXL's size conditioning (original size, crop corner, target size) ``[1, 6]``, as the pipeline builds it."""
        o = self.options
        enc2 = self.pipe.text_encoder_2
        proj = enc2.config.projection_dim if enc2 is not None else None
        ids = self.pipe._get_add_time_ids(tuple(o["original_size"] or size), tuple(o["crops_coords_top_left"]),
                                          tuple(o["target_size"] or size), dtype=dtype, text_encoder_projection_dim=proj)
        return ids.to(self.device)

    def _unet(self, x: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor, added: dict[str, torch.Tensor],
              cond: Conditioning) -> torch.Tensor:
        return self.pipe.unet(x, t, encoder_hidden_states=embeds, timestep_cond=cond.extra["timestep_cond"],
                              added_cond_kwargs=added, return_dict=False)[0]

    def predict(self, latents, t, cond, guidance_scale):
        do_cfg = self._do_cfg(guidance_scale)
        x = self.pipe.scheduler.scale_model_input(torch.cat([latents] * 2) if do_cfg else latents, t)
        noise_pred = self._unet(x, t, cond.embeds, cond.extra["added"], cond)
        if do_cfg:
            noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
            noise_pred = noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond)
            if self.options["guidance_rescale"] > 0.0:
                noise_pred = rescale_noise_cfg(noise_pred, noise_pred_text, guidance_rescale=self.options["guidance_rescale"])
        return noise_pred

    def forward_cond(self, latents, t, cond):
        x = self.pipe.scheduler.scale_model_input(latents, t)
        self._unet(x, t, cond.cond, cond.extra["added_cond"], cond)

    def decode(self, latents, output_type, generator, cond, size):
        pipe = self.pipe
        if output_type == "latent":
            pipe.maybe_free_model_hooks()
            return latents
        vae = pipe.vae
        needs_upcasting = vae.dtype == torch.float16 and vae.config.force_upcast
        if needs_upcasting:
            vae.to(dtype=torch.float32)
            latents = latents.to(next(iter(vae.post_quant_conv.parameters())).dtype)
        mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
        if mean is not None and std is not None:
            mean = torch.tensor(mean).view(1, 4, 1, 1).to(latents.device, latents.dtype)
            std = torch.tensor(std).view(1, 4, 1, 1).to(latents.device, latents.dtype)
            latents = latents * std / vae.config.scaling_factor + mean
        else:
            latents = latents / vae.config.scaling_factor
        image = vae.decode(latents, return_dict=False)[0]
        if needs_upcasting:
            vae.to(dtype=torch.float16)
        if pipe.watermark is not None:
            image = pipe.watermark.apply_watermark(image)
        image = pipe.image_processor.postprocess(image, output_type=output_type)
        pipe.maybe_free_model_hooks()
        return image
