"""The VQA models of the ``tifa`` metric: which model answers TIFA's questions, free-form.

``mplug`` (default)  mPLUG-large, ModelScope model ``damo/mplug_visual-question-answering_coco_large_en``:
    TIFA's default VQA model (``VQAModel("mplug-large")`` in Yushi-Hu/tifa), and the one the T-SAM
    paper's TIFA numbers come from. Run with modelscope's own mPLUG code: the model is modelscope's
    ``MPlugForAllTasks`` and the inputs are made as its ``MPlugPreprocessor`` makes them (see
    :class:`MplugVqa`), so the answers are those of TIFA's
    ``pipeline('visual-question-answering', model=...)({'image': ..., 'question': ...})['text']``.
    Needs ``pip install "tsam-diffusion[tifa]"`` (modelscope and what its mPLUG code imports, with
    transformers<5, which that code needs) and the weights (``modelscope download``).
``blip``  BLIP VQA base (``Salesforce/blip-vqa-base``, transformers), as TIFA's ``vqa_models.BLIP``:
    an alternative TIFA offers, NOT the protocol of TIFA's or T-SAM's published numbers.

Each backend answers ``answer(images, pairs, batch_size) -> list[str]`` for ``(image_index,
question)`` pairs. A backend that cannot be had raises :class:`MetricUnavailable` with one line
saying what to install or download. This module imports neither torch, transformers nor modelscope
at import time.
"""
from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections import defaultdict
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .metrics_base import MetricUnavailable, _chunks, _load

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = [
    "BLIP_VQA_CHECKPOINT",
    "MPLUG_INSTALL",
    "MPLUG_VQA_CHECKPOINT",
    "TIFA_VQA_CHECKPOINT",
    "VQA_BACKENDS",
    "BlipVqa",
    "MplugVqa",
    "VqaBackend",
    "select_vqa",
]

MPLUG_VQA_CHECKPOINT = "damo/mplug_visual-question-answering_coco_large_en"
BLIP_VQA_CHECKPOINT = "Salesforce/blip-vqa-base"
TIFA_VQA_CHECKPOINT = MPLUG_VQA_CHECKPOINT  # TIFA's default VQA model ("mplug-large")
MPLUG_INSTALL = 'pip install "tsam-diffusion[tifa]"'
MPLUG_FILES = ("configuration.json", "config.yaml", "pytorch_model.bin", "vocab.txt")
# MPlugPreprocessor (modelscope/preprocessors/multi_modal.py): CLIP's mean and std, questions
# lower-cased and padded to 25 tokens
MPLUG_MEAN = (0.48145466, 0.4578275, 0.40821073)
MPLUG_STD = (0.26862954, 0.26130258, 0.27577711)
MPLUG_QUESTION_TOKENS = 25

_BLIP_INSTEAD = ("; or answer with BLIP VQA instead: `--option tifa.vqa=blip` (an alternative TIFA offers, not the "
                 "protocol of TIFA's and T-SAM's published numbers)")


# ----------------------------------------------------------------------------- BLIP


class BlipVqa:
    """BLIP VQA with free-form answers, as TIFA's ``vqa_models.BLIP`` (``generate``, max 50 tokens).

    Questions are batched only with questions of the same token length, so no padding enters the
    batch: BLIP's answer decoder attends to every question position, and padded batches would
    answer differently from TIFA's one-at-a-time calls.
    """

    name = "blip"

    def __init__(self, source: str, device: str) -> None:
        from transformers import BlipForQuestionAnswering, BlipProcessor

        kw = dict(metric="tifa", option="vqa_model", default=BLIP_VQA_CHECKPOINT,
                  extra=", together with `--option tifa.vqa=blip`")
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


# ----------------------------------------------------------------------------- mPLUG


class MplugVqa:
    """mPLUG-large VQA through modelscope's own model code, as TIFA's ``vqa_models.MPLUG``.

    ``model`` is modelscope's ``MPlugForAllTasks`` (``model.model(image, question, train=False)``
    returns ``(topk_ids, topk_scores)``, one list of beams per question; ``model.tokenizer`` decodes),
    ``tokenizer`` the question tokenizer and ``image_res`` the side images are resized to. The inputs
    are made as modelscope's ``MPlugPreprocessor`` makes them in inference mode (RGB, bicubic resize to
    ``image_res`` x ``image_res``, ``/255``, CLIP mean and std; the question lower-cased, padded to 25
    tokens) and the answer is the best beam decoded without special tokens, as
    ``MPlugForAllTasks.forward`` returns it as ``'text'``. Questions are padded to 25 tokens alone
    or in a batch, and beams are searched per question, so batching does not change the inputs.
    Build it with :meth:`load`.
    """

    name = "mplug"

    def __init__(self, model: Any, tokenizer: Any, image_res: int, device: str = "cpu") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.image_res = image_res
        self.device = device

    @classmethod
    def load(cls, source: str, device: str) -> MplugVqa:
        """Load mPLUG from a local folder or a ModelScope model id (the cache, else a download),
        or raise :class:`MetricUnavailable` before any weights are read, saying what is missing."""
        modules = _import_mplug()
        _check_mplug_runs(modules)
        folder = _locate_mplug(source)
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
                warnings.simplefilter("ignore", FutureWarning)  # transformers 4: vocab.txt given as a file path
                model = modules.MPlugForAllTasks(folder, task="visual-question-answering")
                tokenizer = modules.BertTokenizer.from_pretrained(folder)  # as MPlugPreprocessor.tokenizer
        except Exception as exc:  # noqa: BLE001 - whatever modelscope raises on a broken folder
            why = f"loading {folder!r} failed ({type(exc).__name__}: {_first_line(exc)})"
            raise MetricUnavailable(_weights_message(source, why)) from exc
        for module in model.modules():  # CLIP's gradient checkpointing: no effect on outputs, warns without grad
            if hasattr(module, "use_grad_ckp"):
                module.use_grad_ckp = False
        return cls(model.to(device).eval(), tokenizer, int(model.model.config.image_res), device)

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """One image as ``MPlugPreprocessor``'s transform makes it: ``(1, 3, image_res, image_res)``."""
        import numpy as np
        import torch
        from PIL import Image as PILImage

        resized = image.convert("RGB").resize((self.image_res, self.image_res), PILImage.BICUBIC)
        x = torch.from_numpy(np.array(resized, np.uint8)).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
        mean = torch.as_tensor(MPLUG_MEAN, dtype=x.dtype).view(-1, 1, 1)
        std = torch.as_tensor(MPLUG_STD, dtype=x.dtype).view(-1, 1, 1)
        return x.sub_(mean).div_(std).unsqueeze(0)

    def answer(self, images: Sequence[Image.Image], pairs: Sequence[tuple[int, str]], batch_size: int) -> list[str]:
        """Free-form answers to ``(image_index, question)`` pairs, in order."""
        import torch

        pixels: dict[int, torch.Tensor] = {}
        for i, _ in pairs:
            if i not in pixels:
                pixels[i] = self.pixels(images[i])
        answers: list[str] = []
        for chunk in _chunks(list(pairs), batch_size):
            image = torch.cat([pixels[i] for i, _ in chunk]).to(self.device)
            question = self.tokenizer([q.lower() for _, q in chunk], padding="max_length", truncation=True,
                                      max_length=MPLUG_QUESTION_TOKENS, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                topk_ids, _ = self.model.model(image, question, train=False)
            answers.extend(self.model.tokenizer.decode(beams[0], skip_special_tokens=True) for beams in topk_ids)
        return answers


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


def _first_line(exc: BaseException) -> str:
    from ..hub import first_line

    return first_line(exc)


def _install_message(why: str) -> str:
    return (f"metric 'tifa' answers with mPLUG-large (TIFA's default VQA model, {MPLUG_VQA_CHECKPOINT}) through "
            f"modelscope's mPLUG code, and {why}; install it in an environment of its own for scoring: "
            f"`{MPLUG_INSTALL}` (modelscope, what its mPLUG code imports, and transformers>=4.40,<5, which that "
            f"code needs; with a CPU-only torch, install torchvision from PyTorch's CPU index first), then get the "
            f"weights: `modelscope download {MPLUG_VQA_CHECKPOINT} --local-dir DIR` and pass "
            f"`--option tifa.vqa_model=DIR`{_BLIP_INSTEAD}")


def _import_mplug() -> SimpleNamespace:
    """modelscope's mPLUG classes, or MetricUnavailable naming what to install."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # timm: "Importing from timm.models.layers is deprecated"
            from modelscope.models.multi_modal.mplug import modeling_mplug
            from modelscope.models.multi_modal.mplug_for_all_tasks import MPlugForAllTasks
        from transformers import BertConfig, BertTokenizer
    except Exception as exc:  # noqa: BLE001 - ImportError, or torchvision's RuntimeError beside another torch build
        raise MetricUnavailable(_install_message(f"that code cannot be imported here ({type(exc).__name__}: "
                                                 f"{_first_line(exc)})")) from exc
    return SimpleNamespace(modeling=modeling_mplug, MPlugForAllTasks=MPlugForAllTasks, BertConfig=BertConfig,
                           BertTokenizer=BertTokenizer)


def _check_mplug_runs(modules: SimpleNamespace) -> None:
    """Build and run a tiny text encoder of modelscope's mPLUG code (milliseconds): that code predates
    transformers 5 (its BertModel calls ``init_weights()`` before ``post_init()`` and
    ``get_head_mask()``), so under transformers 5 it fails here rather than after the weights load."""
    import torch
    import transformers

    config = modules.BertConfig(vocab_size=8, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                                intermediate_size=8, max_position_embeddings=8)
    try:
        with torch.no_grad():
            encoder = modules.modeling.BertModel(config, add_pooling_layer=False).eval()
            encoder(torch.zeros(1, 2, dtype=torch.long), attention_mask=torch.ones(1, 2, dtype=torch.long),
                    return_dict=True)
    except Exception as exc:  # noqa: BLE001
        why = (f"modelscope {_version('modelscope')}'s mPLUG code does not run with transformers "
               f"{transformers.__version__} ({type(exc).__name__}: {_first_line(exc)})")
        raise MetricUnavailable(_install_message(why)) from exc


def _weights_message(source: str, why: str) -> str:
    wanted = "" if source == MPLUG_VQA_CHECKPOINT else f", from {source}"
    return (f"metric 'tifa' needs the weights of mPLUG-large (TIFA's default VQA model: ModelScope model "
            f"{MPLUG_VQA_CHECKPOINT}){wanted}, and {why}; download them where ModelScope is reachable (`modelscope "
            f"download {MPLUG_VQA_CHECKPOINT} --local-dir DIR`), copy DIR here and pass `--option tifa.vqa_model=DIR` "
            f"(Python: `create_metric('tifa', vqa_model=DIR)`){_BLIP_INSTEAD}")


def _locate_mplug(source: str) -> str:
    """The folder of mPLUG's files: ``source`` itself when it is a path, else the ModelScope cache's
    snapshot of the model id, else a download, decided quickly (no download retries offline)."""
    from ..hub import looks_like_path, offline, probe_timeout, reachable

    if looks_like_path(source):
        folder = os.path.expanduser(source)
        if not os.path.isdir(folder):
            raise MetricUnavailable(_weights_message(source, f"the folder {source!r} does not exist"))
        missing = [name for name in MPLUG_FILES if not os.path.isfile(os.path.join(folder, name))]
        if missing:
            raise MetricUnavailable(_weights_message(source, f"the folder {source!r} lacks {', '.join(missing)}"))
        return folder
    cached = _cached_snapshot(source)
    if cached:
        return cached
    host = os.environ.get("MODELSCOPE_DOMAIN", "www.modelscope.cn").split("://")[-1].split("/")[0]
    if offline():
        why = "HF_HUB_OFFLINE is set"
    elif not reachable(host, 443, probe_timeout()):
        why = (f"ModelScope ({host}) cannot be reached from this machine (no answer in {probe_timeout():g} s; on a "
               f"slow network set TSAM_HUB_TIMEOUT=5)")
    else:
        try:
            return _download_snapshot(source)
        except Exception as exc:  # noqa: BLE001
            why = f"downloading it failed ({type(exc).__name__}: {_first_line(exc)})"
    cache = os.environ.get("MODELSCOPE_CACHE", "~/.cache/modelscope")
    raise MetricUnavailable(_weights_message(
        source, f"{source!r} is not a local folder, not in the ModelScope cache ({cache}), and {why}"))


def _cached_snapshot(model_id: str) -> str | None:
    """The ModelScope cache's folder of ``model_id`` (no network), or None."""
    from modelscope.hub.snapshot_download import snapshot_download

    try:
        return snapshot_download(model_id, local_files_only=True)
    except Exception:  # noqa: BLE001 - modelscope's CacheNotFound and the like
        return None


def _download_snapshot(model_id: str) -> str:
    from modelscope.hub.snapshot_download import snapshot_download

    return snapshot_download(model_id)


# ----------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class VqaBackend:
    """A VQA model the ``tifa`` metric can answer with (``--option tifa.vqa=NAME``)."""

    name: str
    checkpoint: str  # the default of vqa_model=
    label: str
    load: Callable[[str, str], Any]  # (vqa_model, device) -> object with answer(images, pairs, batch_size)


VQA_BACKENDS: dict[str, VqaBackend] = {
    "mplug": VqaBackend("mplug", MPLUG_VQA_CHECKPOINT, "mPLUG-large (TIFA's default, ModelScope)", MplugVqa.load),
    "blip": VqaBackend("blip", BLIP_VQA_CHECKPOINT, "BLIP VQA base (transformers)", BlipVqa),
}


def select_vqa(name: str) -> VqaBackend:
    """The backend named ``name`` (``mplug`` or ``blip``); anything else is a ValueError."""
    if name in VQA_BACKENDS:
        return VQA_BACKENDS[name]
    valid = ", ".join(f"{key!r} ({backend.label})" for key, backend in VQA_BACKENDS.items())
    raise ValueError(f"metric 'tifa': vqa={name!r} is not a VQA model; valid: {valid}. A checkpoint (hub id or "
                     f"folder) goes in vqa_model=, e.g. `--option tifa.vqa=blip --option tifa.vqa_model=DIR`")
