"""``tiny-sd``: a tiny, randomly initialised Stable Diffusion pipeline that runs anywhere.

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
TINY_NOTE = "tiny-sd is a random, untrained model: its images are not meaningful"


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
        for name, module in unet.named_modules():  # sharper (non-uniform) cross-attention maps
            if name.endswith("attn2"):
                module.to_q.weight.data.mul_(4.0)
                module.to_k.weight.data.mul_(4.0)
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
    if torch_dtype is not None:
        pipe.to(torch_dtype)
    return pipe
