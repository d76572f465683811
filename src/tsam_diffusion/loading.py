"""Loading a diffusers pipeline by hub id, local folder or built-in name, with one clear error."""
from __future__ import annotations

import json
import os
from importlib import import_module
from typing import Any, Callable

BUILTIN_MODELS: dict[str, Callable[..., Any]] = {
    "tsam-mini": lambda **kw: import_module("tsam_diffusion.mini.model").load_bundled(**kw),
}
"""Built-in pipelines that need no download (name -> builder); ``tiny-sd`` is added by ``tsam_diffusion.tiny``."""


PIPELINE_CLASSES: dict[str, str] = {"TSAMMiniPipeline": "tsam_diffusion.mini.model:TSAMMiniPipeline"}
"""This package's own pipeline classes, by the ``_class_name`` a saved folder's model_index.json gives."""


class ModelLoadError(OSError):
    """A model could not be loaded (missing weights, no network, bad folder)."""


def load_pipeline(model: str, **kwargs: Any) -> Any:
    """``DiffusionPipeline.from_pretrained(model, **kwargs)``, or a built-in such as ``tiny-sd``."""
    from . import tiny  # noqa: F401  (registers the built-in models)

    if model in BUILTIN_MODELS:
        return BUILTIN_MODELS[model](**kwargs)
    from diffusers import DiffusionPipeline

    path = os.path.expanduser(model)
    if (os.path.isabs(path) or model.startswith((".", "~")) or os.path.exists(path)) and not os.path.isdir(path):
        raise ModelLoadError(
            f"model folder {model!r} does not exist; pass a folder written by `save_pretrained`, "
            f"a hub id, or a built-in name ({', '.join(BUILTIN_MODELS)})"
        )
    try:
        index = os.path.join(path, "model_index.json")
        name = None
        if os.path.isfile(index):
            with open(index) as f:
                name = json.load(f).get("_class_name")
        if name in PIPELINE_CLASSES:
            module, cls = PIPELINE_CLASSES[name].split(":")
            return getattr(import_module(module), cls).from_pretrained(path, **kwargs)
        return DiffusionPipeline.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as e:
        raise ModelLoadError(
            f"could not load model {model!r}: {str(e).splitlines()[0][:300]}\n"
            "Pretrained weights are needed and were not found locally. On a machine without access to the "
            "Hugging Face hub, download the model elsewhere (e.g. `huggingface-cli download "
            f"{model} --local-dir DIR`), copy DIR over and pass its path (`--model DIR` / "
            "`TSAMPipeline.from_pretrained(DIR)`). The built-in `tiny-sd` needs no weights (random, "
            "for smoke tests only)."
        ) from e
