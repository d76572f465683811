"""Attend-and-Excite's CLIP metrics (Chefer et al. 2023): ``clip`` and ``clip-text``.

``clip``  CLIP image-text similarity (``metrics/compute_clip_similarity.py`` and
    ``metrics/imagenet_utils.py`` in yuval-alaluf/Attend-and-Excite): OpenAI CLIP ViT-B/16; the prompt
    embedding is the mean of the L2-normalised text embeddings of the prompt put into the 80 ImageNet
    templates, L2-normalised again; values are raw cosines (about 0.3, not x100). Keys: ``full``
    (whole prompt) and ``min`` (the lowest similarity over the prompt's objects, see
    :func:`split_objects`; ``full`` when the prompt does not split). Option ``model=`` (hub id or
    local folder, default ``openai/clip-vit-base-patch16``).
``clip-text``  text-text similarity (``metrics/blip_captioning_and_clip_similarity.py``): BLIP base,
    COCO-finetuned, captions the image (LAVIS ``blip_caption`` ``base_coco``: prompt ``"a picture of "``,
    beam search 3, length 10-30, the prompt cut off the caption); the caption's CLIP text embedding (no
    templates, L2-normalised) is compared with the template-averaged prompt embedding. Key: ``score``.
    The captions of the last call are in ``last_captions``. Options ``model=`` (CLIP) and
    ``captioner=`` (default ``Salesforce/blip-image-captioning-base``).

Registered by ``tsam_diffusion.bench.metrics``. This module imports neither torch nor transformers
at import time; the factories do.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

from .metrics_base import Metric, _check_lengths, _chunks, _load

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = [
    "BLIP_CAPTION_CHECKPOINT",
    "BLIP_CAPTION_PROMPT",
    "CLIP_CHECKPOINT",
    "IMAGENET_TEMPLATES",
    "ClipScore",
    "ClipTextScore",
    "clip_metric",
    "clip_text_metric",
    "fill_templates",
    "split_objects",
    "template_embedding",
]

CLIP_CHECKPOINT = "openai/clip-vit-base-patch16"
BLIP_CAPTION_CHECKPOINT = "Salesforce/blip-image-captioning-base"
BLIP_CAPTION_PROMPT = "a picture of "  # LAVIS configs/models/blip_caption_base_coco.yaml

# The 80 ImageNet prompt templates of OpenAI CLIP's zero-shot notebook, in the order of
# Attend-and-Excite's metrics/imagenet_utils.py (the order does not change their mean).
IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)



# ----------------------------------------------------------------------------- pure helpers


def fill_templates(text: str, templates: Sequence[str] = IMAGENET_TEMPLATES) -> list[str]:
    """``text`` put into each template, with Attend-and-Excite's clean-up of doubled articles.

    As ``get_embedding_for_prompt`` in A&E's ``metrics/imagenet_utils.py``: plain substring
    replacements of ``"a a"`` and then ``"the a"`` by ``"a"`` (so ``"a photo of the a cat."``
    becomes ``"a photo of a cat."``). They are kept verbatim, quirks included, for comparable numbers.
    """
    texts = [template.format(text) for template in templates]
    texts = [t.replace("a a", "a") for t in texts]
    return [t.replace("the a", "a") for t in texts]


def template_embedding(
    text: str,
    embed_texts: Callable[[list[str]], Any],
    templates: Sequence[str] = IMAGENET_TEMPLATES,
) -> torch.Tensor:
    """Attend-and-Excite's prompt embedding: the mean of the L2-normalised embeddings of
    :func:`fill_templates` ``(text)``, L2-normalised again (a float32 vector).

    ``embed_texts(list_of_strings)`` returns one embedding per string (an ``(n, d)`` array).
    """
    import torch

    emb = torch.as_tensor(embed_texts(fill_templates(text, templates))).float()
    emb = emb / emb.norm(dim=-1, keepdim=True)
    mean = emb.mean(dim=0)
    return mean / mean.norm()


def split_objects(prompt: str) -> list[str]:
    """The prompt's parts for the minimum-object similarity: split on ``" and "``, else on
    ``" with "`` (A&E's ``compute_clip_similarity.py``); ``[prompt]`` when neither occurs.

    A&E compares the first two parts (its prompts have exactly two); here every part counts.
    """
    for separator in (" and ", " with "):
        if separator in prompt:
            return prompt.split(separator)
    return [prompt]


# ----------------------------------------------------------------------------- encoders


def _features(output: Any) -> torch.Tensor:
    """``get_text_features`` / ``get_image_features`` output: a tensor (transformers 4) or a
    ``BaseModelOutputWithPooling`` whose ``pooler_output`` is the projected embedding (5)."""
    return output if hasattr(output, "shape") else output.pooler_output


class _Clip:
    """OpenAI CLIP through transformers: normalised text and image embeddings, prompt cache."""

    def __init__(self, source: str, device: str, *, metric: str) -> None:
        from transformers import CLIPModel, CLIPProcessor

        kw = dict(metric=metric, option="model", default=CLIP_CHECKPOINT)
        self.model = _load(CLIPModel.from_pretrained, source, **kw).to(device).eval()
        processor = _load(CLIPProcessor.from_pretrained, source, **kw)
        self.tokenizer = processor.tokenizer
        self.image_processor = processor.image_processor
        self.device = device
        self._prompt_cache: dict[str, torch.Tensor] = {}

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        import torch

        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=77, return_tensors="pt")
        with torch.inference_mode():
            features = _features(self.model.get_text_features(
                input_ids=tokens["input_ids"].to(self.device), attention_mask=tokens["attention_mask"].to(self.device)))
        features = features.float()
        return features / features.norm(dim=-1, keepdim=True)

    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        import torch

        pixels = self.image_processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            features = _features(self.model.get_image_features(
                pixel_values=pixels.to(self.device, self.model.dtype)))
        features = features.float()
        return features / features.norm(dim=-1, keepdim=True)

    def prompt_embedding(self, text: str) -> torch.Tensor:
        """:func:`template_embedding` of ``text``, cached."""
        if text not in self._prompt_cache:
            self._prompt_cache[text] = template_embedding(text, self.embed_texts)
        return self._prompt_cache[text]


# ----------------------------------------------------------------------------- clip


class ClipScore(Metric):
    """Attend-and-Excite's CLIP similarities: ``full`` and minimum-object ``min`` (raw cosines)."""

    name = "clip"

    def __init__(self, clip: _Clip, batch_size: int = 16) -> None:
        self.clip = clip
        self.batch_size = batch_size

    def score(self, images: list[Image.Image], prompts: list[str], metas: list[dict]) -> list[dict[str, float]]:
        _check_lengths(images, prompts, metas)
        out: list[dict[str, float]] = []
        for start in range(0, len(images), self.batch_size):
            features = self.clip.embed_images(images[start:start + self.batch_size])
            for feature, prompt in zip(features, prompts[start:start + self.batch_size]):
                out.append(self._values(feature, prompt))
        return out

    def _values(self, image_feature: torch.Tensor, prompt: str) -> dict[str, float]:
        full = float(image_feature @ self.clip.prompt_embedding(prompt))
        parts = split_objects(prompt)
        if len(parts) < 2:
            return {"full": full, "min": full}
        return {"full": full, "min": min(float(image_feature @ self.clip.prompt_embedding(p)) for p in parts)}


def clip_metric(device: str = "cpu", *, model: str = CLIP_CHECKPOINT, batch_size: int | str = 16) -> ClipScore:
    """Factory of ``clip``: ``model`` is a hub id or a local folder (CLIPModel + CLIPProcessor)."""
    metric = ClipScore(_Clip(model, device, metric="clip"), batch_size=int(batch_size))  # CLI options are strings
    metric.config = {"model": model}
    return metric


# ----------------------------------------------------------------------------- clip-text


class _BlipCaptioner:
    """BLIP captioning as LAVIS ``blip_caption`` generates (prompt, 3 beams, 10-30 tokens)."""

    def __init__(self, source: str, device: str, *, metric: str, prompt: str = BLIP_CAPTION_PROMPT) -> None:
        from transformers import BlipForConditionalGeneration, BlipProcessor

        kw = dict(metric=metric, option="captioner", default=BLIP_CAPTION_CHECKPOINT)
        self.model = _load(BlipForConditionalGeneration.from_pretrained, source, **kw).to(device).eval()
        self.processor = _load(BlipProcessor.from_pretrained, source, **kw)
        self.device = device
        self.prompt = prompt

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        import torch

        rgb = [im.convert("RGB") for im in images]
        inputs = self.processor(images=rgb, text=[self.prompt] * len(rgb), return_tensors="pt")
        with torch.inference_mode():
            ids = self.model.generate(
                pixel_values=inputs["pixel_values"].to(self.device, self.model.dtype),
                input_ids=inputs["input_ids"].to(self.device),
                attention_mask=inputs["attention_mask"].to(self.device),
                num_beams=3, max_length=30, min_length=10, repetition_penalty=1.0, do_sample=False,
            )
        texts = self.processor.batch_decode(ids, skip_special_tokens=True)
        # LAVIS: caption[len(self.prompt):] - the decoded text starts with the prompt
        return [t[len(self.prompt):] if t.startswith(self.prompt) else t for t in texts]


class ClipTextScore(Metric):
    """Attend-and-Excite's text-text similarity: CLIP cosine of the BLIP caption and the prompt."""

    name = "clip-text"

    def __init__(self, clip: _Clip, captioner: _BlipCaptioner, batch_size: int = 16) -> None:
        self.clip = clip
        self.captioner = captioner
        self.batch_size = batch_size
        self.last_captions: list[str] = []

    def score(self, images: list[Image.Image], prompts: list[str], metas: list[dict]) -> list[dict[str, float]]:
        _check_lengths(images, prompts, metas)
        captions: list[str] = []
        for batch in _chunks(images, self.batch_size):
            captions.extend(self.captioner.caption(batch))
        self.last_captions = captions
        out: list[dict[str, float]] = []
        for start in range(0, len(captions), self.batch_size):
            features = self.clip.embed_texts(captions[start:start + self.batch_size])
            for feature, prompt in zip(features, prompts[start:start + self.batch_size]):
                out.append({"score": float(feature @ self.clip.prompt_embedding(prompt))})
        return out


def clip_text_metric(
    device: str = "cpu",
    *,
    model: str = CLIP_CHECKPOINT,
    captioner: str = BLIP_CAPTION_CHECKPOINT,
    caption_prompt: str = BLIP_CAPTION_PROMPT,
    batch_size: int | str = 16,
) -> ClipTextScore:
    """Factory of ``clip-text``: ``model`` (CLIP) and ``captioner`` (BLIP) are hub ids or folders."""
    clip = _Clip(model, device, metric="clip-text")
    blip = _BlipCaptioner(captioner, device, metric="clip-text", prompt=caption_prompt)
    metric = ClipTextScore(clip, blip, batch_size=int(batch_size))
    metric.config = {"model": model, "captioner": captioner, "caption_prompt": caption_prompt}
    return metric
