"""What SD3's and Flux's adapters share: a joint-attention transformer read through ``adapters.joint``,
sampled at ``default_sample_size`` latent cells, decoded with the VAE's scaling and shift factors."""
from __future__ import annotations

from typing import Any, ClassVar

import torch

from .base import CrossAttentionLayer, ModelAdapter
from .joint import Heads, recording


class JointAttentionAdapter(ModelAdapter):
    """Base of the MMDiT families; ``heads`` is the family's (``adapters.joint``)."""

    heads: ClassVar[Heads]

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.pipe.transformer

    def default_size(self) -> tuple[int, int]:
        size = self.pipe.default_sample_size * self.pipe.vae_scale_factor
        return size, size

    def cross_attention_layers(self, height: int, width: int) -> list[CrossAttentionLayer]:
        """The joint blocks' ``attn``, each read as ``A`` over the text keys, on the patch grid."""
        cell, read = self.size_multiple, recording(type(self).heads)
        return [CrossAttentionLayer(f"transformer_blocks.{i}.attn", block.attn, int(height) // cell, int(width) // cell, read)
                for i, block in enumerate(self.pipe.transformer.transformer_blocks)]

    def decode_latents(self, latents: torch.Tensor, output_type: str) -> Any:
        """Images from VAE latents (unpacked), as both pipelines decode them."""
        pipe = self.pipe
        latents = (latents / pipe.vae.config.scaling_factor) + pipe.vae.config.shift_factor
        image = pipe.vae.decode(latents, return_dict=False)[0]
        return pipe.image_processor.postprocess(image, output_type=output_type)
