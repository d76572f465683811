"""tsam-mini: BERT text encoder (bidirectional, [CLS] sink), pixel-space UNet, no VAE."""
from __future__ import annotations

import torch

from .base import Conditioning, CrossAttentionLayer, ModelAdapter, PromptText, eager_attention, truncated
from .unet import unet_cross_attention_layers


class MiniAdapter(ModelAdapter):
    label = "TSAMMiniPipeline (tsam-mini)"
    bidirectional = True  # BERT attends both ways: appendix B.2's tril((T' + T'^T) / 2)
    default_preset = "mini"  # tuned on shapes-dev (docs/tsam-mini.md)
    default_steps = 25
    default_guidance_scale = 4.0

    @classmethod
    def supports(cls, pipe) -> bool:
        from ..mini.model import TSAMMiniPipeline

        return isinstance(pipe, TSAMMiniPipeline)

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.pipe.unet

    def default_size(self) -> tuple[int, int]:
        size = self.pipe.unet.config.sample_size
        return size, size

    def text_attention(self, prompts: list[str]) -> list[PromptText]:
        batch = self.pipe.tokenize(prompts)
        with torch.no_grad(), eager_attention(self.pipe.text_encoder):
            out = self.pipe.text_encoder(batch.input_ids.to(self.device), attention_mask=batch.attention_mask.to(self.device),
                                         output_attentions=True)
        attn = torch.stack(out.attentions, dim=1)  # [P, L, H, N, N]
        full_lengths = [len(ids) for ids in self.pipe.tokenizer(prompts).input_ids]
        texts = []
        for p, ids in enumerate(batch.input_ids.tolist()):
            sep = ids.index(self.pipe.tokenizer.sep_token_id)
            keep = torch.arange(1, sep)  # without [CLS], [SEP] and padding
            texts.append(PromptText(self.pipe.tokenizer.convert_ids_to_tokens(ids[1:sep]), keep, attn[p],
                                    truncated(p, full_lengths[p], batch.input_ids.shape[1], sep - 1), out.last_hidden_state[p]))
        return texts

    def encode_prompt(self, prompts, negative_prompt, num_images_per_prompt, guidance_scale, size=None) -> Conditioning:
        cond, cond_mask, embeds, mask = self.pipe.encode_prompt(prompts, num_images_per_prompt, negative_prompt, guidance_scale > 1)
        return Conditioning(cond=cond, embeds=embeds, extra={"mask": mask, "cond_mask": cond_mask})

    def prepare_latents(self, batch, height, width, generator, latents):
        if (height, width) != self.default_size():
            raise ValueError(f"tsam-mini draws {self.default_size()[0]}x{self.default_size()[1]} images only, got {height}x{width}; "
                             "leave height and width unset")
        return self.pipe.prepare_latents(batch, generator, latents)

    def cross_attention_layers(self, height: int, width: int) -> list[CrossAttentionLayer]:
        return unet_cross_attention_layers(self.pipe.unet, height, width)

    def predict(self, latents, t, cond, guidance_scale):
        return self.pipe.predict(latents, t, cond.embeds, cond.extra["mask"], guidance_scale)

    def forward_cond(self, latents, t, cond):
        self.pipe.predict(latents, t, cond.cond, cond.extra["cond_mask"], guidance_scale=1.0)  # no CFG: conditional only

    def decode(self, latents, output_type, generator, cond, size):
        return self.pipe.to_images(latents, output_type)
