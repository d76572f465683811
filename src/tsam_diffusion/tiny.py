"""``tiny-sd``, ``tiny-sdxl``, ``tiny-pixart``, ``tiny-pixart-sigma``, ``tiny-sd3``, ``tiny-flux``: tiny, randomly initialised pipelines that run anywhere.

Same classes as SD 1.5 (CLIPTextModel + the real CLIP tokenizer, UNet2DConditionModel,
AutoencoderKL, PNDMScheduler with SD 1.5's settings) at about 3 million parameters, built
from configs with fixed seeds: for smoke tests, the README and CI. Its images are NOT meaningful.
At its default 128x128 (32x32 latents) its UNet has cross-attention at 32x32 and 16x16, so T-SAM's
default M=256 reads the 16x16 layers as it does for SD 1.5 at 512px. Its cross-attention query and
key projections are scaled up so that the random maps are not uniform and guidance has a gradient
to follow (an untrained model's attention is otherwise nearly flat).
"""
from __future__ import annotations

from importlib.resources import files
from typing import Any

import torch


CLIP_TOKENIZER_DIR = files("tsam_diffusion") / "data" / "clip_tokenizer"
T5_TOKENIZER_DIR = files("tsam_diffusion") / "data" / "t5_tokenizer"
TINY_NOTE = "tiny models are random and untrained: their images are not meaningful"


def clip_tokenizer(pad_token: str = "<|endoftext|>"):
    """transformers' CLIPTokenizer with the real CLIP BPE vocabulary (49,408 tokens), offline.

    SD 1.x pads with ``<|endoftext|>``, SD 2.x with ``!``.
    """
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(CLIP_TOKENIZER_DIR), pad_token=pad_token, model_max_length=77)


def build_tiny_sd(
    *,
    seed: int = 0,
    prediction_type: str = "epsilon",
    pad_token: str = "<|endoftext|>",
    text_layers: int = 4,
    torch_dtype: torch.dtype | None = None,
    **_: Any,
):
    """A tiny SD 1.x-style pipeline (``prediction_type="v_prediction"``, ``pad_token="!"``: SD 2.x-style)."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=32,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
            norm_num_groups=8,
        )
        _sharpen_cross_attention(unet)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            block_out_channels=(16, 32, 32),
            down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3,
            latent_channels=4,
            norm_num_groups=8,
            layers_per_block=1,
            sample_size=128,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=49408,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=text_layers,
                num_attention_heads=4,
                max_position_embeddings=77,
                projection_dim=32,
                bos_token_id=49406,
                eos_token_id=49407,
                pad_token_id=49407 if pad_token == "<|endoftext|>" else 0,
            )
        )
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
        prediction_type=prediction_type,
    )
    pipe = StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=clip_tokenizer(pad_token),
        unet=unet.eval(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    if torch_dtype not in (None, torch.float32):  # models are built in float32; no-op casts only log noise
        pipe.to(torch_dtype)
    return pipe


def t5_tokenizer():
    """transformers' T5Tokenizer with a small sentencepiece unigram vocabulary (2,000 pieces, T5's special
    tokens, trained on the bundled prompts by ``tools/make_t5_tokenizer.py``): T5's real one cannot be
    downloaded here. It splits words as T5's does; its vocabulary is not T5's."""
    from transformers import T5Tokenizer

    return T5Tokenizer.from_pretrained(str(T5_TOKENIZER_DIR))


def _sharpen_cross_attention(model: torch.nn.Module, factor: float = 4.0) -> None:
    """Scale the cross-attention query and key projections so that a random model's maps are not
    uniform and guidance has a gradient to follow."""
    for name, module in model.named_modules():
        if name.endswith("attn2"):
            module.to_q.weight.data.mul_(factor)
            module.to_k.weight.data.mul_(factor)


def _sharpen_joint_attention(model: torch.nn.Module, factor: float = 4.0) -> None:
    """As ``_sharpen_cross_attention`` for joint attention: scale the image queries and the text keys."""
    for block in model.transformer_blocks:
        block.attn.to_q.weight.data.mul_(factor)
        block.attn.add_k_proj.weight.data.mul_(factor)


def _tiny_t5(tokenizer: Any, d_model: int):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=2,
                                   num_heads=4, feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1,
                                   decoder_start_token_id=0))


def _tiny_clip_config(hidden: int, pad: int):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=49408, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=3,
                          num_attention_heads=4, max_position_embeddings=77, projection_dim=hidden, hidden_act="gelu",
                          bos_token_id=49406, eos_token_id=49407, pad_token_id=pad)


def _tiny_flow_vae(sample_size: int):
    """A 2x AutoencoderKL with SD3/Flux-style scaling and shift factors (4 latent channels, not 16)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(16, 32), latent_channels=4, norm_num_groups=8,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         layers_per_block=1, sample_size=sample_size, scaling_factor=1.5305, shift_factor=0.0609,
                         use_quant_conv=False, use_post_quant_conv=False)


def build_tiny_sd3(*, seed: int = 0, num_layers: int = 6, qk_norm: str | None = None, dynamic_shifting: bool = False,
                   torch_dtype: torch.dtype | None = None, **_: Any):
    """A tiny SD3 pipeline: two CLIP encoders with projection (the real tokenizer, the second padding with
    ``!``), a T5 encoder with ``t5_tokenizer()``, an ``SD3Transformer2DModel`` (``num_layers`` joint blocks,
    patch 2; ``qk_norm="rms_norm"``: SD3.5's), a 2x VAE with shift factor, flow-matching Euler (shift 3;
    ``dynamic_shifting``: resolution-dependent ``mu`` as SD3.5 may use). 64x64 images: a 16x16 patch grid
    (M = 256, as SD 1.5's 16x16 maps); the default layers are the middle third of the blocks."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    tokenizer_3 = t5_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = SD3Transformer2DModel(sample_size=32, patch_size=2, in_channels=4, num_layers=num_layers,
                                            attention_head_dim=8, num_attention_heads=4, joint_attention_dim=64,
                                            caption_projection_dim=32, pooled_projection_dim=64, out_channels=4,
                                            pos_embed_max_size=32, qk_norm=qk_norm)
        _sharpen_joint_attention(transformer)
        vae = _tiny_flow_vae(64)
        text_encoder = CLIPTextModelWithProjection(_tiny_clip_config(32, 49407))
        text_encoder_2 = CLIPTextModelWithProjection(_tiny_clip_config(32, 0))
        text_encoder_3 = _tiny_t5(tokenizer_3, 64)
    shift = dict(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.16) if dynamic_shifting else {}
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, **shift)
    pipe = StableDiffusion3Pipeline(transformer=transformer.eval(), scheduler=scheduler, vae=vae.eval(),
                                    text_encoder=text_encoder.eval(), tokenizer=clip_tokenizer(),
                                    text_encoder_2=text_encoder_2.eval(), tokenizer_2=clip_tokenizer(pad_token="!"),
                                    text_encoder_3=text_encoder_3.eval(), tokenizer_3=tokenizer_3)
    if torch_dtype not in (None, torch.float32):  # models are built in float32; no-op casts only log noise
        pipe.to(torch_dtype)
    return pipe


def build_tiny_flux(*, seed: int = 0, num_layers: int = 4, num_single_layers: int = 2, guidance_embeds: bool = True,
                    torch_dtype: torch.dtype | None = None, **_: Any):
    """A tiny FLUX.1 pipeline: a CLIP encoder (pooled only), a T5 encoder with ``t5_tokenizer()``, a
    ``FluxTransformer2DModel`` (``num_layers`` double-stream and ``num_single_layers`` single-stream
    blocks, rotary embeddings, ``guidance_embeds``: dev's distilled guidance, False: schnell), a 2x VAE
    with shift factor, flow-matching Euler with dynamic shifting as Flux's. 64x64 images by default
    (``default_sample_size`` set to 32): 2x2-packed latents on a 16x16 grid (M = 256)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    tokenizer_2 = t5_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=num_layers,
                                             num_single_layers=num_single_layers, attention_head_dim=16, num_attention_heads=2,
                                             joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=guidance_embeds,
                                             axes_dims_rope=(4, 4, 8))
        _sharpen_joint_attention(transformer)
        vae = _tiny_flow_vae(64)
        text_encoder = CLIPTextModel(_tiny_clip_config(32, 49407))
        text_encoder_2 = _tiny_t5(tokenizer_2, 32)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
                                                base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                                                max_image_seq_len=4096)
    pipe = FluxPipeline(scheduler=scheduler, vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=clip_tokenizer(),
                        text_encoder_2=text_encoder_2.eval(), tokenizer_2=tokenizer_2, transformer=transformer.eval())
    pipe.default_sample_size = 32  # 64x64 images (Flux's 128 would be 256x256 with this 2x VAE)
    if torch_dtype not in (None, torch.float32):  # models are built in float32; no-op casts only log noise
        pipe.to(torch_dtype)
    return pipe


def build_tiny_pixart(*, seed: int = 0, sigma: bool = False, num_layers: int = 20, tokenizer: Any = None,
                      sample_size: int = 32, torch_dtype: torch.dtype | None = None, **_: Any):
    """A tiny PixArt-alpha (``sigma=True``: PixArt-Sigma) pipeline: T5EncoderModel (4 layers, v1.1's gated
    GELU) with ``t5_tokenizer()``, PixArtTransformer2DModel (``num_layers`` blocks, 3 heads of 16 (a width the 1024px size embedding divides), patch 2,
    learned sigma), an 8x AutoencoderKL and PixArt's DPM-Solver++ scheduler. 256x256 images (32x32
    latents, a 16x16 patch grid: M = 256, as SD 1.5's 16x16 maps). ``tokenizer``: another T5 tokenizer;
    ``sample_size=128``: PixArt-alpha 1024's latent size, with its resolution and aspect-ratio micro-conditions."""
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtSigmaPipeline, PixArtTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    tokenizer = tokenizer or t5_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = T5EncoderModel(T5Config(
            vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=4, num_heads=4,
            feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
        transformer = PixArtTransformer2DModel(
            num_attention_heads=3, attention_head_dim=16, in_channels=4, out_channels=8, num_layers=num_layers,
            cross_attention_dim=48, caption_channels=32, sample_size=sample_size, patch_size=2, norm_num_groups=8)
        _sharpen_cross_attention(transformer)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=8, layers_per_block=1, sample_size=sample_size * 8)
    scheduler = DPMSolverMultistepScheduler(beta_start=0.0001, beta_end=0.02, beta_schedule="linear", num_train_timesteps=1000,
                                            prediction_type="epsilon", solver_order=2, algorithm_type="dpmsolver++",
                                            lower_order_final=True)
    cls = PixArtSigmaPipeline if sigma else PixArtAlphaPipeline
    pipe = cls(tokenizer=tokenizer, text_encoder=text_encoder.eval(), vae=vae.eval(), transformer=transformer.eval(),
               scheduler=scheduler)
    if torch_dtype not in (None, torch.float32):  # models are built in float32; no-op casts only log noise
        pipe.to(torch_dtype)
    return pipe


def build_tiny_sdxl(*, seed: int = 0, torch_dtype: torch.dtype | None = None, **_: Any):
    """A tiny SDXL pipeline: two CLIP text encoders (CLIPTextModel and CLIPTextModelWithProjection, the
    real tokenizer, the second padding with ``!`` as SDXL's), a UNet with SDXL's block types and added
    conditions (pooled text embedding, time ids), a 2x VAE, Euler discrete. 128x128 images: a 64x64
    latent whose first level has no attention and whose cross-attention runs at 32x32 and 16x16 (SDXL at
    1024px: none at 128x128, then 64x64 and 32x32), so the ``sdxl`` preset's M = 1024 reads the 32x32 layers."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    def clip_config(hidden: int, pad: int) -> CLIPTextConfig:
        return CLIPTextConfig(vocab_size=49408, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=3,
                              num_attention_heads=4, max_position_embeddings=77, projection_dim=32, hidden_act="gelu",
                              bos_token_id=49406, eos_token_id=49407, pad_token_id=pad)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=64, in_channels=4, out_channels=4, block_out_channels=(16, 32, 64), layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 1, 2), attention_head_dim=(2, 4, 8), use_linear_projection=True,
            cross_attention_dim=64, addition_embed_type="text_time", addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=6 * 8 + 32, norm_num_groups=8)
        _sharpen_cross_attention(unet)
        vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(16, 32), latent_channels=4, norm_num_groups=8,
                            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                            layers_per_block=1, sample_size=128, force_upcast=True)
        text_encoder = CLIPTextModel(clip_config(32, 49407))
        text_encoder_2 = CLIPTextModelWithProjection(clip_config(32, 0))
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       num_train_timesteps=1000, steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(vae=vae.eval(), text_encoder=text_encoder.eval(), text_encoder_2=text_encoder_2.eval(),
                                     tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer(pad_token="!"), unet=unet.eval(),
                                     scheduler=scheduler, add_watermarker=False)
    if torch_dtype not in (None, torch.float32):  # models are built in float32; no-op casts only log noise
        pipe.to(torch_dtype)
    return pipe
