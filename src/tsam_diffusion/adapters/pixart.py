"""PixArt-alpha and PixArt-Sigma: T5 text encoder (bidirectional), DiT denoiser (``PixArtTransformer2DModel``).

T comes from the pipeline's own T5 encoder, run once per prompt with its attention mask, over the
real tokens before ``</s>`` (T5 has no BOS), made causal by appendix B.2's ``tril((T' + T'^T) / 2)``.
The maps are those of ``transformer_blocks[i].attn2`` (padded text positions are masked out by the
pipeline's -10000 bias, so their probabilities are the ones the model uses), on the patch grid
(32x32 at 512px, 64x64 at 1024px), averaged over blocks 10-18 by default (appendix B.2); an update
pass stops after the last block read. Sampling reproduces diffusers' ``PixArtAlphaPipeline`` /
``PixArtSigmaPipeline`` call by call: resolution binning, caption cleaning, micro-conditions,
learned-sigma output, the one-step (DMD) case.
"""
from __future__ import annotations

from typing import Any

import torch
from diffusers import PixArtAlphaPipeline, PixArtSigmaPipeline
from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import (
    ASPECT_RATIO_256_BIN, ASPECT_RATIO_512_BIN, ASPECT_RATIO_1024_BIN)
from diffusers.pipelines.pixart_alpha.pipeline_pixart_sigma import ASPECT_RATIO_2048_BIN
from diffusers.utils.torch_utils import maybe_adjust_dtype_for_device

from .base import Conditioning, CrossAttentionLayer, ModelAdapter, PromptText
from .t5 import t5_text_attention

BINS = {256: ASPECT_RATIO_2048_BIN, 128: ASPECT_RATIO_1024_BIN, 64: ASPECT_RATIO_512_BIN, 32: ASPECT_RATIO_256_BIN}
"""diffusers' aspect-ratio bins by the transformer's ``sample_size`` (latent cells)."""


class PixArtAlphaAdapter(ModelAdapter):
    pipeline_classes = (PixArtAlphaPipeline,)
    label = "PixArtAlphaPipeline (PixArt-alpha)"
    bidirectional = True  # T5 attends both ways: appendix B.2
    default_preset = "pixart"
    default_steps = 50  # the paper's (appendix B.2); diffusers' pipeline defaults to 20
    default_guidance_scale = 4.5  # diffusers' and PixArt's default
    default_layers = tuple(range(10, 19))  # blocks 10-18 (appendix B.2)
    call_options = {"use_resolution_binning": True, "clean_caption": True, "max_sequence_length": 120}
    micro_conditions = True  # resolution and aspect ratio embedded at sample_size 128 (PixArt-alpha 1024px)
    one_step_original = True  # one step (PixArt-alpha DMD): the scheduler's predicted original sample
    sets_begin_index = True  # the loop starts with scheduler.set_begin_index(0)

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.pipe.transformer

    def default_size(self) -> tuple[int, int]:
        size = self.pipe.transformer.config.sample_size * self.pipe.vae_scale_factor
        return size, size

    @property
    def size_multiple(self) -> int:
        return self.pipe.vae_scale_factor * self.pipe.transformer.config.patch_size

    def sampling_size(self, height: int, width: int) -> tuple[int, int]:
        if not self.options["use_resolution_binning"]:
            return height, width
        bins = BINS.get(self.pipe.transformer.config.sample_size)
        if bins is None:
            raise ValueError(f"resolution binning knows sample sizes {sorted(BINS)}, this transformer has "
                             f"{self.pipe.transformer.config.sample_size}; pass use_resolution_binning=False")
        return self.pipe.image_processor.classify_height_width_bin(height, width, ratios=bins)

    def _texts(self, prompts: list[str]) -> list[str]:
        return self.pipe._text_preprocessing(prompts, clean_caption=self.options["clean_caption"])

    def word_pieces(self, word: str) -> list[str]:
        return self.pipe.tokenizer.tokenize(self._texts([word])[0])

    def text_attention(self, prompts: list[str]) -> list[PromptText]:
        # The encoder sees the prompt as encode_prompt gives it (cleaned or lower-cased, truncated to
        # max_sequence_length); padding is masked out, so padding to the longest prompt of the batch
        # instead of to max_sequence_length leaves the real tokens' attention unchanged.
        return t5_text_attention(self.pipe.tokenizer, self.pipe.text_encoder, self._texts(prompts),
                                 self.options["max_sequence_length"], self.device)

    def encode_prompt(self, prompts, negative_prompt, num_images_per_prompt, guidance_scale, size=None) -> Conditioning:
        do_cfg = guidance_scale > 1.0
        cond, cond_mask, uncond, uncond_mask = self.pipe.encode_prompt(
            prompts, do_cfg, negative_prompt="" if negative_prompt is None else negative_prompt,
            num_images_per_prompt=num_images_per_prompt, device=self.device, clean_caption=self.options["clean_caption"],
            max_sequence_length=self.options["max_sequence_length"])
        embeds, mask = (torch.cat([uncond, cond]), torch.cat([uncond_mask, cond_mask])) if do_cfg else (cond, cond_mask)
        adjust = lambda m: m.to(maybe_adjust_dtype_for_device(m.dtype, m.device))  # noqa: E731  (as the pipeline)
        added = {"resolution": None, "aspect_ratio": None}  # micro-conditions: PixArt-alpha at 1024px only
        added_cfg = added
        if self.micro_conditions and self.pipe.transformer.config.sample_size == 128:
            h, w = size or self.default_size()
            rows = cond.shape[0]
            added = {"resolution": torch.tensor([h, w]).repeat(rows, 1).to(dtype=cond.dtype, device=self.device),
                     "aspect_ratio": torch.tensor([float(h / w)]).repeat(rows, 1).to(dtype=cond.dtype, device=self.device)}
            added_cfg = {k: torch.cat([v, v]) for k, v in added.items()} if do_cfg else added
        return Conditioning(cond=cond, embeds=embeds, extra={"mask": adjust(mask), "cond_mask": adjust(cond_mask),
                                                             "added": added_cfg, "added_cond": added})

    def prepare_latents(self, batch, height, width, generator, latents):
        dtype = self.pipe.text_encoder.dtype if self.pipe.text_encoder is not None else self.dtype
        return self.pipe.prepare_latents(batch, self.pipe.transformer.config.in_channels, height, width, dtype,
                                         self.device, generator, latents)

    def step_kwargs(self, generator):
        return self.pipe.prepare_extra_step_kwargs(generator, 0.0)

    def before_loop(self) -> None:
        if self.sets_begin_index and hasattr(self.pipe.scheduler, "set_begin_index"):
            self.pipe.scheduler.set_begin_index(0)

    def cross_attention_layers(self, height: int, width: int) -> list[CrossAttentionLayer]:
        cell = self.size_multiple
        return [CrossAttentionLayer(f"transformer_blocks.{i}.attn2", block.attn2, int(height) // cell, int(width) // cell)
                for i, block in enumerate(self.pipe.transformer.transformer_blocks)]

    def _transformer(self, x: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor, mask: torch.Tensor,
                     added: dict[str, Any]) -> torch.Tensor:
        """The transformer's raw output, with the timestep as the pipeline passes it."""
        x = self.pipe.scheduler.scale_model_input(x, t)
        timestep = (t[None] if t.ndim == 0 else t).to(x.device).expand(x.shape[0])
        return self.pipe.transformer(x, encoder_hidden_states=embeds, encoder_attention_mask=mask, timestep=timestep,
                                     added_cond_kwargs=added, return_dict=False)[0]

    def predict(self, latents, t, cond, guidance_scale):
        do_cfg = guidance_scale > 1.0
        noise_pred = self._transformer(torch.cat([latents] * 2) if do_cfg else latents, t, cond.embeds, cond.extra["mask"],
                                       cond.extra["added"])
        if do_cfg:
            noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
            noise_pred = noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond)
        if self.pipe.transformer.config.out_channels // 2 == self.pipe.transformer.config.in_channels:  # learned sigma
            noise_pred = noise_pred.chunk(2, dim=1)[0]
        return noise_pred

    def forward_cond(self, latents, t, cond):
        self._transformer(latents, t, cond.cond, cond.extra["cond_mask"], cond.extra["added_cond"])

    def scheduler_step(self, noise_pred, t, latents, step_kwargs, num_inference_steps):
        out = self.pipe.scheduler.step(noise_pred, t, latents, **step_kwargs, return_dict=False)
        if not (self.one_step_original and num_inference_steps == 1):
            return out[0]
        if len(out) < 2:
            raise ValueError(f"one-step sampling with PixArt-alpha takes the scheduler's predicted original sample (its DMD "
                             f"model), which {type(self.pipe.scheduler).__name__} does not return; use 2 or more steps, or a "
                             "scheduler that returns it (DDIM, LCM)")
        return out[1]

    def decode(self, latents, output_type, generator, cond, size):
        pipe = self.pipe
        if output_type == "latent":
            image = latents
        else:
            image = pipe.vae.decode(self._vae_input(latents) / pipe.vae.config.scaling_factor, return_dict=False)[0]
            if self.options["use_resolution_binning"]:
                image = pipe.image_processor.resize_and_crop_tensor(image, size[1], size[0])
            image = pipe.image_processor.postprocess(image, output_type=output_type)
        pipe.maybe_free_model_hooks()
        return image

    def _vae_input(self, latents: torch.Tensor) -> torch.Tensor:
        return latents


class PixArtSigmaAdapter(PixArtAlphaAdapter):
    """PixArt-Sigma: as alpha, with 300 text tokens, no micro-conditions, no DMD one-step case, no
    ``set_begin_index``, and the latents cast to the VAE's dtype before decoding (its pipeline's differences)."""

    pipeline_classes = (PixArtSigmaPipeline,)
    label = "PixArtSigmaPipeline (PixArt-Sigma)"
    call_options = {"use_resolution_binning": True, "clean_caption": True, "max_sequence_length": 300}
    micro_conditions = False
    one_step_original = False
    sets_begin_index = False

    def _vae_input(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.to(self.pipe.vae.dtype)
