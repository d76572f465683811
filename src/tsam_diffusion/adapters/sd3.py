"""Stable Diffusion 3 / 3.5: two CLIP encoders and T5 on one text sequence, joint-attention MMDiT (``SD3Transformer2DModel``).

The joint sequence of each block is ``[image, text]``; the text part is CLIP-L and CLIP-G (77
positions, features concatenated) followed by T5 (``max_sequence_length`` positions, 256 by default),
none of it masked. ``A`` is the image-to-text block of ``transformer_blocks[i].attn``, renormalised
over the text keys (``adapters.joint``, ``docs/design/mmdit.md``), on the patch grid (64x64 at
1024px), averaged over the middle third of the blocks by default (8-15 of SD3-medium's 24); an update
pass stops after the last block read.

T (``text_attention``): ``"clip"`` (default) reads the CLIP positions 1..k, with T' the two CLIP
encoders' maps averaged as for SDXL (causal, eq. 2-3); ``"t5"`` reads the T5 positions (77 + 0..k'-1)
with T5's T' through appendix B.2, computed on the padded sequence the pipeline gives T5 (unmasked).
Which of the two localises objects better in SD3's maps is to be measured with weights.

Sampling reproduces diffusers' ``StableDiffusion3Pipeline`` call by call (classifier-free guidance,
the flow-matching shift ``mu`` with dynamic shifting, the VAE's shift factor); skip-layer guidance
and IP-Adapter are not supported.
"""
from __future__ import annotations

from typing import Any

import torch

from .base import Conditioning, PromptText
from .clip import averaged_clip_attention
from .mmdit import JointAttentionAdapter
from .t5 import t5_text_attention

TEXT_ATTENTION = ("clip", "t5")


def sd3_heads(attn: Any, t: torch.Tensor, kind: str, args: tuple[Any, ...], n_text: int) -> torch.Tensor:
    """``JointAttnProcessor2_0``'s per-head queries or keys: reshape, then ``norm_q``/``norm_k``/``norm_added_k``."""
    t = t.view(t.shape[0], -1, attn.heads, t.shape[-1] // attn.heads).transpose(1, 2)
    norm = {"q": attn.norm_q, "k": attn.norm_k, "added_k": attn.norm_added_k}[kind]
    return t if norm is None else norm(t)


class StableDiffusion3Adapter(JointAttentionAdapter):
    pipeline_names = ("StableDiffusion3Pipeline",)
    label = "StableDiffusion3Pipeline (SD3, SD3.5)"
    default_preset = "sd3"
    default_steps = 28  # diffusers' default for SD3
    default_guidance_scale = 7.0
    heads = staticmethod(sd3_heads)
    call_options = {"text_attention": "clip", "max_sequence_length": 256, "mu": None}

    def configured(self, **options: Any) -> "StableDiffusion3Adapter":
        new = super().configured(**options)
        if new.options["text_attention"] not in TEXT_ATTENTION:
            raise ValueError(f"text_attention must be one of {', '.join(TEXT_ATTENTION)}, got {new.options['text_attention']!r}")
        if new.options["text_attention"] == "t5" and self.pipe.text_encoder_3 is None:
            raise ValueError("text_attention='t5' needs the pipeline's T5 encoder (text_encoder_3), which this one was "
                             "loaded without; use text_attention='clip'")
        if not 1 <= new.options["max_sequence_length"] <= 512:
            raise ValueError(f"max_sequence_length must be 1-512, got {new.options['max_sequence_length']}")
        return new

    @property
    def bidirectional(self) -> bool:  # type: ignore[override]  (T5 attends both ways: appendix B.2)
        return self.options["text_attention"] == "t5"

    @property
    def default_layers(self) -> tuple[int, ...]:  # type: ignore[override]
        n = len(self.pipe.transformer.transformer_blocks)
        return tuple(range(n // 3, max(2 * n // 3, n // 3 + 1)))  # the middle third (8-15 of 24)

    @property
    def size_multiple(self) -> int:
        return self.pipe.vae_scale_factor * self.pipe.transformer.config.patch_size

    def text_attention(self, prompts: list[str]) -> list[PromptText]:
        pipe = self.pipe
        if self.options["text_attention"] == "t5":
            return t5_text_attention(pipe.tokenizer_3, pipe.text_encoder_3, prompts, self.options["max_sequence_length"],
                                     self.device, masked=False, offset=pipe.tokenizer_max_length)
        return averaged_clip_attention([(pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)],
                                       prompts, self.device)

    def word_pieces(self, word: str) -> list[str]:
        tok = self.pipe.tokenizer_3 if self.options["text_attention"] == "t5" else self.pipe.tokenizer
        return tok.tokenize(word)

    def encode_prompt(self, prompts, negative_prompt, num_images_per_prompt, guidance_scale, size=None) -> Conditioning:
        do_cfg = guidance_scale > 1
        cond, uncond, pooled, uncond_pooled = self.pipe.encode_prompt(
            prompt=prompts, prompt_2=None, prompt_3=None, negative_prompt=negative_prompt, do_classifier_free_guidance=do_cfg,
            device=self.device, num_images_per_prompt=num_images_per_prompt,
            max_sequence_length=self.options["max_sequence_length"])
        embeds, pooled_all = (torch.cat([uncond, cond]), torch.cat([uncond_pooled, pooled])) if do_cfg else (cond, pooled)
        return Conditioning(cond=cond, embeds=embeds, extra={"pooled": pooled_all, "pooled_cond": pooled})

    def prepare_latents(self, batch, height, width, generator, latents):
        return self.pipe.prepare_latents(batch, self.pipe.transformer.config.in_channels, height, width,
                                         self._embeds_dtype(), self.device, generator, latents)

    def _embeds_dtype(self) -> torch.dtype:
        """The prompt embeddings' dtype, which the pipeline gives its latents."""
        encoder = self.pipe.text_encoder or self.pipe.text_encoder_2
        return encoder.dtype if encoder is not None else self.dtype

    def timesteps(self, num_inference_steps, height, width):
        from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift, retrieve_timesteps

        scheduler, mu = self.pipe.scheduler, self.options["mu"]
        kwargs = {}
        if scheduler.config.get("use_dynamic_shifting", None) and mu is None:
            cell = self.size_multiple
            mu = calculate_shift((height // cell) * (width // cell), scheduler.config.get("base_image_seq_len", 256),
                                 scheduler.config.get("max_image_seq_len", 4096), scheduler.config.get("base_shift", 0.5),
                                 scheduler.config.get("max_shift", 1.16))
        if mu is not None:
            kwargs["mu"] = mu
        return retrieve_timesteps(scheduler, num_inference_steps, self.device, sigmas=None, **kwargs)

    def _transformer(self, x: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        return self.pipe.transformer(hidden_states=x, timestep=t.expand(x.shape[0]), encoder_hidden_states=embeds,
                                     pooled_projections=pooled, joint_attention_kwargs=None, return_dict=False)[0]

    def predict(self, latents, t, cond, guidance_scale):
        do_cfg = guidance_scale > 1
        noise_pred = self._transformer(torch.cat([latents] * 2) if do_cfg else latents, t, cond.embeds, cond.extra["pooled"])
        if do_cfg:
            noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
            noise_pred = noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond)
        return noise_pred

    def forward_cond(self, latents, t, cond):
        self._transformer(latents, t, cond.cond, cond.extra["pooled_cond"])

    def decode(self, latents, output_type, generator, cond, size):
        image = latents if output_type == "latent" else self.decode_latents(latents, output_type)
        self.pipe.maybe_free_model_hooks()
        return image
