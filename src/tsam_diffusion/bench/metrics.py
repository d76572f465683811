"""Image metrics for the benchmark harness, computed the way the papers' own evaluation code does.

Registry
--------
``create_metric(name, device="cpu", **options)`` builds a registered metric; ``METRICS`` maps each
name to its factory ``(device, **options) -> Metric`` and ``register_metric(name, factory)`` adds
one. A factory loads its weights (and data) at once and raises :class:`MetricUnavailable`, with one
message naming the checkpoint and the option that takes a local folder, when it cannot. A metric's
``score(images, prompts, metas)`` returns one ``{key: float}`` dict per image, ready for the run
database's ``scores(job_id, metric, key, value)`` rows.

Metrics
-------
``clip``  Attend-and-Excite's CLIP image-text similarity (Chefer et al. 2023, ``metrics/
    compute_clip_similarity.py`` and ``metrics/imagenet_utils.py`` in yuval-alaluf/Attend-and-Excite):
    OpenAI CLIP ViT-B/16; the prompt embedding is the mean of the L2-normalised text embeddings of
    the prompt put into the 80 ImageNet templates, L2-normalised again; values are raw cosines
    (about 0.3, not x100). Keys: ``full`` (whole prompt) and ``min`` (the lowest similarity over
    the prompt's objects, see :func:`split_objects`; ``full`` when the prompt does not split).
    Option ``model=`` (hub id or local folder, default ``openai/clip-vit-base-patch16``).
``clip-text``  Attend-and-Excite's text-text similarity (``metrics/blip_captioning_and_clip_
    similarity.py``): BLIP base, COCO-finetuned, captions the image (LAVIS ``blip_caption``
    ``base_coco``: prompt ``"a picture of "``, beam search 3, length 10-30, the prompt cut off the
    caption); the caption's CLIP text embedding (no templates, L2-normalised) is compared with the
    template-averaged prompt embedding. Key: ``score``. The captions of the last call are in
    ``last_captions``. Options ``model=`` (CLIP) and ``captioner=`` (default
    ``Salesforce/blip-image-captioning-base``).
``tifa``  TIFA (Hu et al. 2023, ``tifa/tifa_score.py``, ``tifa/vqa_models.py`` and
    ``tifascore/mc_sbert.py`` in Yushi-Hu/tifa): a VQA model answers each of the prompt's
    questions; a free-form answer that is not among the choices is mapped to the choice of highest
    SBERT cosine; a question is correct when that choice equals the reference answer. Keys:
    ``score`` (mean over the image's questions), and per element type ``correct:<type>`` and
    ``questions:<type>`` (counts, as floats) so that a report can compute accuracy by type over all
    questions. An image whose prompt has no questions gets NO values (an empty dict), so it is
    left out of every TIFA mean rather than counted as 0. Options ``questions=`` (path or URL of
    the TIFA question/answer JSON; default the TIFA v1.0 file on GitHub), ``vqa=`` (default
    ``Salesforce/blip-vqa-base``; TIFA's paper recommends mPLUG-large, which is not a transformers
    model) and ``sbert=`` (default ``sentence-transformers/all-mpnet-base-v2``, read with
    transformers ``AutoModel`` + mean pooling, as TIFA's ``mc_sbert.py`` does).

This module imports neither torch nor transformers at import time; the factories do.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence, TypeVar

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = [
    "BLIP_CAPTION_CHECKPOINT",
    "BLIP_CAPTION_PROMPT",
    "CLIP_CHECKPOINT",
    "IMAGENET_TEMPLATES",
    "METRICS",
    "SBERT_CHECKPOINT",
    "TIFA_QUESTIONS_URL",
    "TIFA_VQA_CHECKPOINT",
    "ClipScore",
    "ClipTextScore",
    "Metric",
    "MetricFactory",
    "MetricUnavailable",
    "QuestionResult",
    "TifaQuestion",
    "TifaQuestions",
    "TifaScore",
    "create_metric",
    "fill_templates",
    "load_tifa_questions",
    "map_to_choice",
    "parse_tifa_questions",
    "register_metric",
    "split_objects",
    "template_embedding",
    "tifa_image_values",
]

CLIP_CHECKPOINT = "openai/clip-vit-base-patch16"
BLIP_CAPTION_CHECKPOINT = "Salesforce/blip-image-captioning-base"
BLIP_CAPTION_PROMPT = "a picture of "  # LAVIS configs/models/blip_caption_base_coco.yaml
TIFA_VQA_CHECKPOINT = "Salesforce/blip-vqa-base"
SBERT_CHECKPOINT = "sentence-transformers/all-mpnet-base-v2"
TIFA_QUESTIONS_URL = "https://raw.githubusercontent.com/Yushi-Hu/tifa/main/tifa_v1.0/tifa_v1.0_question_answers.json"

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


# ----------------------------------------------------------------------------- registry


class MetricUnavailable(RuntimeError):
    """A metric's pretrained weights (or data) cannot be loaded; raised by its factory."""


class Metric(ABC):
    """An image metric: ``score`` returns one dict of named float values per image."""

    name: str = ""

    @abstractmethod
    def score(self, images: list[Image.Image], prompts: list[str], metas: list[dict]) -> list[dict[str, float]]:
        """Score ``images[i]`` against ``prompts[i]`` (with ``metas[i]``); batched inside."""


MetricFactory = Callable[..., Metric]
"""``factory(device: str, **options) -> Metric``; loads the weights, raises MetricUnavailable."""

METRICS: dict[str, MetricFactory] = {}


def register_metric(name: str, factory: MetricFactory) -> None:
    """Register (or replace) the factory ``(device, **options) -> Metric`` under ``name``."""
    METRICS[name] = factory


def metric_names() -> list[str]:
    """The registered metrics' names, sorted."""
    return sorted(METRICS)


def create_metric(name: str, device: str = "cpu", **options: Any) -> Metric:
    """Build the metric registered as ``name`` on ``device``; unknown names raise ``ValueError``."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; valid names: {', '.join(sorted(METRICS))}")
    return METRICS[name](device, **options)


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


def map_to_choice(answer: str, choices: Sequence[str], embed: Callable[[list[str]], Any]) -> str:
    """TIFA's multiple-choice mapping (``VQAModel.multiple_choice_vqa``): ``answer`` itself when it
    is one of ``choices``, else the choice whose embedding has the highest cosine with the
    answer's (the first on ties). ``embed(list_of_strings)`` returns an ``(n, d)`` array.
    """
    if answer in choices:
        return answer
    import torch

    vectors = torch.as_tensor(embed([answer, *choices])).float()
    vectors = vectors / vectors.norm(dim=-1, keepdim=True)
    cosines = vectors[1:] @ vectors[0]
    return choices[int(torch.argmax(cosines))]


@dataclass(frozen=True)
class TifaQuestion:
    """One TIFA question about a prompt."""

    question: str
    choices: tuple[str, ...]
    answer: str
    element_type: str


@dataclass(frozen=True)
class QuestionResult:
    """How one image did on one TIFA question."""

    question: str
    element_type: str
    free_form: str
    chosen: str
    correct: bool


def tifa_image_values(results: Iterable[QuestionResult]) -> dict[str, float]:
    """An image's TIFA values: ``score`` (fraction correct) and per element type
    ``correct:<type>`` / ``questions:<type>`` counts; ``{}`` when there are no questions."""
    results = list(results)
    if not results:
        return {}
    correct: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    for result in results:
        total[result.element_type] += 1
        correct[result.element_type] += int(result.correct)
    values = {"score": sum(correct.values()) / len(results)}
    for element_type in sorted(total):
        values[f"correct:{element_type}"] = float(correct[element_type])
        values[f"questions:{element_type}"] = float(total[element_type])
    return values


# ----------------------------------------------------------------------------- loading


def _unavailable_message(metric: str, option: str, source: str, default: str, why: str) -> str:
    wanted = default if source == default else f"{source} (in place of {default})"
    return (f"metric {metric!r} needs the pretrained checkpoint {wanted}, and {why}; download {default} where the "
            f"hub is reachable (`huggingface-cli download {default} --local-dir DIR`), copy DIR here and pass "
            f"`--option {metric}.{option}=DIR` (Python: `create_metric({metric!r}, {option}=DIR)`)")


def _load(loader: Callable[..., Any], source: str, *, metric: str, option: str, default: str, **kwargs: Any) -> Any:
    """``loader(source, **kwargs)`` (a ``from_pretrained``) with load failures as MetricUnavailable.

    Whether the weights can be had is decided first, in well under a second (``tsam_diffusion.hub``),
    so an offline machine gets the message at once rather than after the hub client's retries.
    """
    from ..hub import WeightsNotFound, first_line, locate

    try:
        where = locate(source)
    except WeightsNotFound as exc:
        raise MetricUnavailable(_unavailable_message(metric, option, source, default, str(exc))) from None
    try:
        return loader(source, **where, **kwargs)
    except (OSError, ValueError) as exc:
        why = f"loading it failed ({first_line(exc)})"
        raise MetricUnavailable(_unavailable_message(metric, option, source, default, why)) from exc


T = TypeVar("T")


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    size = max(1, size)
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _check_lengths(images: Sequence[Any], prompts: Sequence[str], metas: Sequence[dict]) -> None:
    if not len(images) == len(prompts) == len(metas):
        raise ValueError(f"score() needs as many prompts and metas as images, got "
                         f"{len(images)} images, {len(prompts)} prompts, {len(metas)} metas")


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


def clip_metric(device: str = "cpu", *, model: str = CLIP_CHECKPOINT, batch_size: int = 16) -> ClipScore:
    """Factory of ``clip``: ``model`` is a hub id or a local folder (CLIPModel + CLIPProcessor)."""
    return ClipScore(_Clip(model, device, metric="clip"), batch_size=batch_size)


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
    batch_size: int = 16,
) -> ClipTextScore:
    """Factory of ``clip-text``: ``model`` (CLIP) and ``captioner`` (BLIP) are hub ids or folders."""
    clip = _Clip(model, device, metric="clip-text")
    blip = _BlipCaptioner(captioner, device, metric="clip-text", prompt=caption_prompt)
    return ClipTextScore(clip, blip, batch_size=batch_size)


# ----------------------------------------------------------------------------- tifa


@dataclass
class TifaQuestions:
    """TIFA's questions by text id, and each caption's (first) text id."""

    by_id: dict[str, list[TifaQuestion]]
    id_of_caption: dict[str, str]

    def lookup(self, prompt: str, meta: dict | None) -> list[TifaQuestion]:
        """Questions by ``meta["tifa_id"]`` when present (a suite prefix as in ``tifa-v1:coco_1`` is
        dropped: TIFA ids have no colon), else by caption == ``prompt`` (both stripped)."""
        tifa_id = (meta or {}).get("tifa_id")
        if tifa_id is None:
            tifa_id = self.id_of_caption.get(prompt.strip())
        return self.by_id.get(str(tifa_id).rsplit(":", 1)[-1], []) if tifa_id is not None else []


def parse_tifa_questions(records: list[dict]) -> TifaQuestions:
    """Index TIFA question/answer records (``id``, ``caption``, ``question``, ``choices``,
    ``answer``, ``element_type``). A caption shared by several ids maps to the first in file order."""
    by_id: dict[str, list[TifaQuestion]] = defaultdict(list)
    id_of_caption: dict[str, str] = {}
    for rec in records:
        tifa_id = str(rec["id"])
        by_id[tifa_id].append(TifaQuestion(rec["question"], tuple(rec["choices"]), rec["answer"], rec["element_type"]))
        id_of_caption.setdefault(rec["caption"].strip(), tifa_id)
    return TifaQuestions(dict(by_id), id_of_caption)


def load_tifa_questions(source: str | Path) -> TifaQuestions:
    """Read the TIFA question/answer JSON from a local path, or from an http(s) URL if reachable."""
    text = str(source)
    hint = "pass a local copy with the option questions=/path/to/tifa_v1.0_question_answers.json"
    try:
        if text.startswith(("http://", "https://")):
            with urllib.request.urlopen(text, timeout=30) as response:
                records = json.loads(response.read().decode("utf-8"))
        else:
            records = json.loads(Path(text).read_text(encoding="utf-8"))
        return parse_tifa_questions(records)
    except (OSError, urllib.error.URLError) as exc:
        raise MetricUnavailable(f"metric 'tifa' needs TIFA's question/answer file, which could not be "
                                f"read from {text} ({exc}); {hint}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise MetricUnavailable(f"metric 'tifa': {text} is not a TIFA question/answer JSON list "
                                f"({type(exc).__name__}: {exc}); {hint}") from exc


class _SBert:
    """Sentence embeddings as TIFA's ``mc_sbert.py``: mean pooling over tokens, L2-normalised."""

    def __init__(self, source: str, device: str) -> None:
        from transformers import AutoModel, AutoTokenizer

        kw = dict(metric="tifa", option="sbert", default=SBERT_CHECKPOINT)
        self.tokenizer = _load(AutoTokenizer.from_pretrained, source, **kw)
        self.model = _load(AutoModel.from_pretrained, source, **kw).to(device).eval()
        self.device = device

    def __call__(self, sentences: list[str]) -> torch.Tensor:
        import torch

        encoded = self.tokenizer(sentences, padding=True, truncation=True, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            tokens = self.model(**encoded)[0].float()
        mask = encoded["attention_mask"].unsqueeze(-1).float()
        pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1).cpu()


class _BlipVqa:
    """BLIP VQA with free-form answers, as TIFA's ``vqa_models.BLIP`` (``generate``, max 50 tokens).

    Questions are batched only with questions of the same token length, so no padding enters the
    batch: BLIP's answer decoder attends to every question position, and padded batches would
    answer differently from TIFA's one-at-a-time calls.
    """

    def __init__(self, source: str, device: str) -> None:
        from transformers import BlipForQuestionAnswering, BlipProcessor

        kw = dict(metric="tifa", option="vqa", default=TIFA_VQA_CHECKPOINT)
        self.model = _load(BlipForQuestionAnswering.from_pretrained, source, **kw).to(device).eval()
        self.processor = _load(BlipProcessor.from_pretrained, source, **kw)
        self.device = device

    def answer(self, images: Sequence[Image.Image], pairs: Sequence[tuple[int, str]], batch_size: int) -> list[str]:
        """Free-form answers to ``(image_index, question)`` pairs, in order."""
        import torch

        pixels = self.processor.image_processor(images=[im.convert("RGB") for im in images],
                                                return_tensors="pt")["pixel_values"]
        token_ids = [self.processor.tokenizer(q)["input_ids"] for _, q in pairs]
        by_length: dict[int, list[int]] = defaultdict(list)
        for k, ids in enumerate(token_ids):
            by_length[len(ids)].append(k)
        answers = [""] * len(pairs)
        for group in by_length.values():
            for chunk in _chunks(group, batch_size):
                input_ids = torch.tensor([token_ids[k] for k in chunk], device=self.device)
                with torch.inference_mode():
                    out = self.model.generate(
                        input_ids=input_ids,
                        pixel_values=pixels[[pairs[k][0] for k in chunk]].to(self.device, self.model.dtype),
                        attention_mask=torch.ones_like(input_ids),
                        max_length=50,
                    )
                for k, text in zip(chunk, self.processor.batch_decode(out, skip_special_tokens=True)):
                    answers[k] = text
        return answers


class TifaScore(Metric):
    """TIFA: VQA accuracy on the prompt's questions, per image and per element type."""

    name = "tifa"

    def __init__(self, questions: TifaQuestions, vqa: _BlipVqa, sbert: Callable[[list[str]], Any],
                 batch_size: int = 32) -> None:
        self.questions = questions
        self.vqa = vqa
        self.sbert = sbert
        self.batch_size = batch_size
        self.last_results: list[list[QuestionResult]] = []

    def score(self, images: list[Image.Image], prompts: list[str], metas: list[dict]) -> list[dict[str, float]]:
        _check_lengths(images, prompts, metas)
        asked = [(i, q) for i, (prompt, meta) in enumerate(zip(prompts, metas))
                 for q in self.questions.lookup(prompt, meta)]
        answers = self.vqa.answer(images, [(i, q.question) for i, q in asked], self.batch_size) if asked else []
        results: list[list[QuestionResult]] = [[] for _ in images]
        for (i, q), free_form in zip(asked, answers):
            chosen = map_to_choice(free_form, q.choices, self.sbert)
            results[i].append(QuestionResult(q.question, q.element_type, free_form, chosen, chosen == q.answer))
        self.last_results = results
        return [tifa_image_values(r) for r in results]


def tifa_metric(
    device: str = "cpu",
    *,
    questions: str | Path = TIFA_QUESTIONS_URL,
    vqa: str = TIFA_VQA_CHECKPOINT,
    sbert: str = SBERT_CHECKPOINT,
    batch_size: int = 32,
) -> TifaScore:
    """Factory of ``tifa``: ``questions`` is a path or URL; ``vqa`` and ``sbert`` hub ids or folders."""
    bank = load_tifa_questions(questions)
    return TifaScore(bank, _BlipVqa(vqa, device), _SBert(sbert, device), batch_size=batch_size)


register_metric("clip", clip_metric)
register_metric("clip-text", clip_text_metric)
register_metric("tifa", tifa_metric)


def shapes_metric(device: str = "cpu", **options: Any) -> Metric:
    """ShapesJudge on ShapesBench images (exact; no weights): ``tsam_diffusion.mini.shapesbench``."""
    from ..mini.shapesbench import shapes_metric as make

    return make(device, **options)


register_metric("shapes", shapes_metric)
