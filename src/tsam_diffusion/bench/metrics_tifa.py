"""TIFA (Hu et al. 2023): VQA accuracy on the prompt's questions, the ``tifa`` metric.

As ``tifa/tifa_score.py``, ``tifa/vqa_models.py`` and ``tifascore/mc_sbert.py`` in Yushi-Hu/tifa: a VQA
model answers each of the prompt's questions free-form; an answer that is not among the choices is
mapped to the choice of highest SBERT cosine; a question is correct when that choice equals the
reference answer.

Keys: ``score`` (mean over the image's questions), per element type ``correct:<type>`` and
``questions:<type>`` (counts, as floats) so that a report can compute accuracy by type over all
questions, and ``vqa:<name>`` = 1.0 naming the VQA model that answered (``vqa:mplug`` or
``vqa:blip``), so that every stored number says where it came from. An image whose prompt has no
questions gets NO values (an empty dict), so it is left out of every TIFA mean rather than counted
as 0. The metric's ``config`` holds the exact sources (questions file, VQA model and checkpoint,
SBERT).

Options: ``questions=`` (path or URL of the TIFA question/answer JSON; default the TIFA v1.0 file on
GitHub); ``vqa=`` the VQA model, ``mplug`` (default: mPLUG-large, TIFA's default and the T-SAM
paper's, through modelscope) or ``blip`` (BLIP VQA base, transformers), see
:mod:`tsam_diffusion.bench.metrics_vqa`; ``vqa_model=`` its checkpoint, a local folder or a model id
(default ``damo/mplug_visual-question-answering_coco_large_en`` on ModelScope, or
``Salesforce/blip-vqa-base`` for ``blip``); ``sbert=`` (default
``sentence-transformers/all-mpnet-base-v2``, read with transformers ``AutoModel`` + mean pooling, as
TIFA's ``mc_sbert.py`` does); ``batch_size=``.

Registered by ``tsam_diffusion.bench.metrics``. This module imports neither torch nor transformers
at import time; the factory does.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol, Sequence

from .metrics_base import Metric, MetricUnavailable, _check_lengths, _load
from .metrics_vqa import select_vqa

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = [
    "SBERT_CHECKPOINT",
    "TIFA_QUESTIONS_URL",
    "QuestionResult",
    "TifaQuestion",
    "TifaQuestions",
    "TifaScore",
    "VqaModel",
    "load_tifa_questions",
    "map_to_choice",
    "parse_tifa_questions",
    "tifa_image_values",
    "tifa_metric",
]

SBERT_CHECKPOINT = "sentence-transformers/all-mpnet-base-v2"
TIFA_QUESTIONS_URL = "https://raw.githubusercontent.com/Yushi-Hu/tifa/main/tifa_v1.0/tifa_v1.0_question_answers.json"


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


# ----------------------------------------------------------------------------- questions and SBERT


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


# ----------------------------------------------------------------------------- the metric


class VqaModel(Protocol):
    """What TifaScore asks of a VQA model (``metrics_vqa.MplugVqa``, ``BlipVqa``)."""

    def answer(self, images: Sequence[Image.Image], pairs: Sequence[tuple[int, str]],
               batch_size: int) -> list[str]: ...


class TifaScore(Metric):
    """TIFA: VQA accuracy on the prompt's questions, per image and per element type.

    ``vqa.name`` (``mplug``, ``blip``), where the VQA object has one, is added to the values of every
    image that has questions as ``vqa:<name>`` = 1.0.
    """

    name = "tifa"

    def __init__(self, questions: TifaQuestions, vqa: VqaModel, sbert: Callable[[list[str]], Any],
                 batch_size: int = 32) -> None:
        self.questions = questions
        self.vqa = vqa
        self.vqa_name: str = getattr(vqa, "name", "")
        self.sbert = sbert
        self.batch_size = batch_size
        self.last_results: list[list[QuestionResult]] = []

    def score(self, images: list[Image.Image], prompts: list[str], metas: list[dict]) -> list[dict[str, float]]:
        _check_lengths(images, prompts, metas)
        asked = [(i, q) for i, (prompt, meta) in enumerate(zip(prompts, metas))
                 for q in self.questions.lookup(prompt, meta)]
        answers = self.vqa.answer(images, [(i, q.question) for i, q in asked], self.batch_size) if asked else []
        if len(answers) != len(asked):
            raise RuntimeError(f"the VQA model gave {len(answers)} answers to {len(asked)} questions")
        results: list[list[QuestionResult]] = [[] for _ in images]
        for (i, q), free_form in zip(asked, answers):
            chosen = map_to_choice(free_form, q.choices, self.sbert)
            results[i].append(QuestionResult(q.question, q.element_type, free_form, chosen, chosen == q.answer))
        self.last_results = results
        values = [tifa_image_values(r) for r in results]
        if self.vqa_name:
            for v in values:
                if v:
                    v[f"vqa:{self.vqa_name}"] = 1.0
        return values


def tifa_metric(
    device: str = "cpu",
    *,
    questions: str | Path = TIFA_QUESTIONS_URL,
    vqa: str = "mplug",
    vqa_model: str | None = None,
    sbert: str = SBERT_CHECKPOINT,
    batch_size: int | str = 32,
) -> TifaScore:
    """Factory of ``tifa``: ``questions`` is a path or URL; ``vqa`` names the VQA model (``mplug`` or
    ``blip``; anything else is a ValueError, raised first), ``vqa_model`` its checkpoint (default the
    backend's own); ``sbert`` a hub id or folder. Everything is loaded here, before any scoring."""
    backend = select_vqa(vqa)
    source = vqa_model or backend.checkpoint
    bank = load_tifa_questions(questions)
    metric = TifaScore(bank, backend.load(source, device), _SBert(sbert, device), batch_size=int(batch_size))
    metric.config = {"questions": str(questions), "vqa": backend.name, "vqa_model": source, "sbert": sbert}
    return metric
