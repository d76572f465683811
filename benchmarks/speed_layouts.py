"""The exact block layouts ``speed.py`` times, built from configs with random weights.

Each keeps the real model's depth, block types, attention layout, head counts, token counts and text
encoder, and divides the denoiser's (and VAE's) channel widths by ``width_scale`` so that the
proportions of cost between resolutions and blocks stay those of the real model on a CPU.

- ``sd15``: Stable Diffusion 1.5 (UNet 320-640-1280-1280, CLIP ViT-L at full size, PNDM), 512px.
- ``pixart-alpha``: PixArt-XL-2-512x512 (28 DiT blocks, 16 heads of 72, patch 2, learned sigma; T5-XXL's
  24 layers and 64 heads with its widths divided too; DPM-Solver++), 512px: a 32x32 patch grid.
- ``sdxl``: SDXL base (UNet 320-640-1280 with 1/2/10 transformer layers and 5/10/20 heads of 64, added
  text/time conditions; CLIP ViT-L and OpenCLIP ViT-bigG at full size; Euler), 1024px.
- ``sd3``: SD3-medium (24 joint blocks, 24 heads of 64, patch 2, 16 latent channels; CLIP ViT-L and
  OpenCLIP ViT-bigG at full size, T5-XXL's 24 layers and 64 heads with its widths divided, 256 T5
  tokens; flow-matching Euler, shift 3), 1024px: 4096 image tokens and 333 text tokens per block.
- ``flux-dev``: FLUX.1-dev (19 double-stream and 38 single-stream blocks, 24 heads of 128 with rotary
  embeddings, guidance embedding; CLIP ViT-L at full size, T5-XXL with its widths divided, 512 tokens),
  1024px: 4096 image tokens and 512 text tokens.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from tsam_diffusion.tiny import clip_tokenizer, t5_tokenizer


def _vae(width_scale: int, sample_size: int, latent_channels: int = 4, **kw: Any):
    """SD's (and SDXL's, PixArt's; SD3's and Flux's with 16 latent channels) VAE layout: 128-256-512-512, two layers per block."""
    from diffusers import AutoencoderKL

    ch = lambda c: max(32, -(-c // width_scale // 32) * 32)  # noqa: E731  (a multiple of the 32 norm groups)
    return AutoencoderKL(block_out_channels=tuple(ch(c) for c in (128, 256, 512, 512)), down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=latent_channels, layers_per_block=2, sample_size=sample_size, **kw)


def _clip(hidden: int, layers: int, heads: int, act: str, projection: int, pad: int, with_projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers, num_attention_heads=heads,
                            max_position_embeddings=77, hidden_act=act, projection_dim=projection, bos_token_id=49406,
                            eos_token_id=49407, pad_token_id=pad)
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


def build_sd15(width_scale: int, device: str, dtype: torch.dtype, seed: int = 0):
    """SD 1.5's pipeline layout with random weights; UNet and VAE channels divided by ``width_scale``."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet2DConditionModel(
            sample_size=64, block_out_channels=tuple(c // width_scale for c in (320, 640, 1280, 1280)), layers_per_block=2,
            cross_attention_dim=768, attention_head_dim=8, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
        vae = _vae(width_scale, 512)
        text = _clip(768, 12, 12, "quick_gelu", 768, 49407)
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", set_alpha_to_one=False,
                              skip_prk_steps=True, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae.eval(), text_encoder=text.eval(), tokenizer=clip_tokenizer(), unet=unet.eval(),
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    return _ready(pipe, device, dtype)


def build_pixart_alpha(width_scale: int, device: str, dtype: torch.dtype, seed: int = 0):
    """PixArt-XL-2-512x512's layout; transformer, T5 and VAE widths divided by ``width_scale`` (heads kept)."""
    from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    tokenizer = t5_tokenizer()  # T5's real vocabulary cannot be downloaded here; the token counts are alike
    head, d_model = max(1, 72 // width_scale), 4096 // width_scale
    torch.manual_seed(seed)
    with torch.device(device):
        text = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=d_model, d_kv=max(1, 64 // width_scale),
                                       d_ff=10240 // width_scale, num_layers=24, num_heads=64, feed_forward_proj="gated-gelu",
                                       pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
        transformer = PixArtTransformer2DModel(num_attention_heads=16, attention_head_dim=head, in_channels=4, out_channels=8,
                                               num_layers=28, cross_attention_dim=16 * head, caption_channels=d_model,
                                               sample_size=64, patch_size=2)
        vae = _vae(width_scale, 512)
    scheduler = DPMSolverMultistepScheduler(beta_start=0.0001, beta_end=0.02, beta_schedule="linear", prediction_type="epsilon",
                                            solver_order=2, algorithm_type="dpmsolver++", lower_order_final=True)
    pipe = PixArtAlphaPipeline(tokenizer=tokenizer, text_encoder=text.eval(), vae=vae.eval(), transformer=transformer.eval(),
                               scheduler=scheduler)
    return _ready(pipe, device, dtype)


def build_sdxl(width_scale: int, device: str, dtype: torch.dtype, seed: int = 0):
    """SDXL base's layout; UNet and VAE widths divided by ``width_scale`` (heads kept), both text encoders at full size."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    head = max(1, 64 // width_scale)
    channels = tuple(h * head for h in (5, 10, 20))
    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet2DConditionModel(
            sample_size=128, block_out_channels=channels, layers_per_block=2, norm_num_groups=max(g for g in range(1, 33) if math.gcd(*channels) % g == 0),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=(1, 2, 10),
            attention_head_dim=(5, 10, 20), use_linear_projection=True, cross_attention_dim=2048, addition_embed_type="text_time",
            addition_time_embed_dim=256, projection_class_embeddings_input_dim=6 * 256 + 1280)
        vae = _vae(width_scale, 1024, force_upcast=True)
        text = _clip(768, 12, 12, "quick_gelu", 768, 49407)
        text_2 = _clip(1280, 32, 20, "gelu", 1280, 0, with_projection=True)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                                       timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(vae=vae.eval(), text_encoder=text.eval(), text_encoder_2=text_2.eval(), tokenizer=clip_tokenizer(),
                                     tokenizer_2=clip_tokenizer(pad_token="!"), unet=unet.eval(), scheduler=scheduler,
                                     add_watermarker=False)
    return _ready(pipe, device, dtype)


def _t5_xxl(width_scale: int, tokenizer: Any):
    """T5-XXL's encoder (24 layers, 64 heads) with its widths divided by ``width_scale``."""
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=4096 // width_scale, d_kv=max(1, 64 // width_scale),
                                   d_ff=10240 // width_scale, num_layers=24, num_heads=64, feed_forward_proj="gated-gelu",
                                   pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))


def build_sd3(width_scale: int, device: str, dtype: torch.dtype, seed: int = 0):
    """SD3-medium's layout; transformer, T5 and VAE widths divided by ``width_scale`` (heads kept), both CLIP encoders at full size."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    tokenizer_3 = t5_tokenizer()
    head = max(1, 64 // width_scale)
    torch.manual_seed(seed)
    with torch.device(device):
        transformer = SD3Transformer2DModel(sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=head,
                                            num_attention_heads=24, joint_attention_dim=4096 // width_scale,
                                            caption_projection_dim=24 * head, pooled_projection_dim=768 + 1280, out_channels=16,
                                            pos_embed_max_size=192)
        vae = _vae(width_scale, 1024, latent_channels=16, scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False,
                   use_post_quant_conv=False)
        text = _clip(768, 12, 12, "quick_gelu", 768, 49407, with_projection=True)
        text_2 = _clip(1280, 32, 20, "gelu", 1280, 0, with_projection=True)
        text_3 = _t5_xxl(width_scale, tokenizer_3)
    pipe = StableDiffusion3Pipeline(transformer=transformer.eval(), scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                                    vae=vae.eval(), text_encoder=text.eval(), tokenizer=clip_tokenizer(),
                                    text_encoder_2=text_2.eval(), tokenizer_2=clip_tokenizer(pad_token="!"),
                                    text_encoder_3=text_3.eval(), tokenizer_3=tokenizer_3)
    return _ready(pipe, device, dtype)


def build_flux_dev(width_scale: int, device: str, dtype: torch.dtype, seed: int = 0):
    """FLUX.1-dev's layout; transformer, T5 and VAE widths divided by ``width_scale`` (heads kept), CLIP at full size."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    tokenizer_2 = t5_tokenizer()
    head = 2 * max(2, 64 // width_scale)  # even, split over the three rotary axes as 16-56-56 is
    side = 2 * (head * 56 // 128 // 2)
    torch.manual_seed(seed)
    with torch.device(device):
        transformer = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38,
                                             attention_head_dim=head, num_attention_heads=24, joint_attention_dim=4096 // width_scale,
                                             pooled_projection_dim=768, guidance_embeds=True,
                                             axes_dims_rope=(head - 2 * side, side, side))
        vae = _vae(width_scale, 1024, latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
                   use_post_quant_conv=False)
        text = _clip(768, 12, 12, "quick_gelu", 768, 49407)
        text_2 = _t5_xxl(width_scale, tokenizer_2)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    pipe = FluxPipeline(scheduler=scheduler, vae=vae.eval(), text_encoder=text.eval(), tokenizer=clip_tokenizer(),
                        text_encoder_2=text_2.eval(), tokenizer_2=tokenizer_2, transformer=transformer.eval())
    return _ready(pipe, device, dtype)


def _ready(pipe: Any, device: str, dtype: torch.dtype) -> Any:
    pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


LAYOUTS: dict[str, dict[str, Any]] = {
    "sd15": dict(build=build_sd15, size=512, call={}, methods="reference,none,sd-tifa,sd-ae,sd-tifa+ckpt"),
    "pixart-alpha": dict(build=build_pixart_alpha, size=512, call={"clean_caption": False},
                         methods="reference,none,pixart,pixart+ckpt"),
    "sdxl": dict(build=build_sdxl, size=1024, call={}, methods="reference,none,sdxl,sdxl+ckpt"),
    "sd3": dict(build=build_sd3, size=1024, call={}, methods="reference,none,sd3,sd3+ckpt"),
    "flux-dev": dict(build=build_flux_dev, size=1024, call={}, methods="reference,none,flux,flux+ckpt"),
}
"""Per layout: its builder, image size, extra pipeline arguments (both for diffusers' call and ours) and default methods."""
