"""Loading a diffusers pipeline by hub id, local folder or built-in name, with one clear error."""
from __future__ import annotations

import json
import os
from importlib import import_module
from typing import Any, Callable

from .hub import ModelLoadError, dtype_kwargs, first_line, looks_like_path

__all__ = ["BUILTIN_MODELS", "PIPELINE_CLASSES", "ModelLoadError", "load_pipeline"]

BUILTIN_MODELS: dict[str, Callable[..., Any]] = {
    "tsam-mini": lambda **kw: import_module("tsam_diffusion.mini.model").load_bundled(**kw),
    "tiny-sd": lambda **kw: import_module("tsam_diffusion.tiny").build_tiny_sd(**kw),
    "tiny-sdxl": lambda **kw: import_module("tsam_diffusion.tiny").build_tiny_sdxl(**kw),
    "tiny-pixart": lambda **kw: import_module("tsam_diffusion.tiny").build_tiny_pixart(**kw),
    "tiny-pixart-sigma": lambda **kw: import_module("tsam_diffusion.tiny").build_tiny_pixart(sigma=True, **kw),
    "tiny-sd3": lambda **kw: import_module("tsam_diffusion.tiny").build_tiny_sd3(**kw),
    "tiny-flux": lambda **kw: import_module("tsam_diffusion.tiny").build_tiny_flux(**kw),
}
"""Built-in pipelines that need no download (name -> builder, imported when used)."""


PIPELINE_CLASSES: dict[str, str] = {"TSAMMiniPipeline": "tsam_diffusion.mini.model:TSAMMiniPipeline"}
"""This package's own pipeline classes, by the ``_class_name`` a saved folder's model_index.json gives."""


def check_model(model: str) -> dict[str, Any]:
    """Whether ``model`` can be loaded, decided in well under a second and before torch or diffusers
    are imported: ``from_pretrained`` keyword arguments (``{}`` or ``local_files_only``), or
    ``ModelLoadError`` with the exact way to fix it."""
    if model in BUILTIN_MODELS:
        return {}
    from .hub import WeightsNotFound, locate

    try:
        return locate(model)
    except WeightsNotFound as e:
        if looks_like_path(model):
            raise ModelLoadError(f"model folder {model!r} does not exist; pass a folder written by `save_pretrained`, "
                                 f"a hub id, or a built-in name ({', '.join(BUILTIN_MODELS)})") from None
        raise ModelLoadError(f"cannot load model {model!r}: pretrained weights are needed and {e}; {_fix(model)}") from None


def _fix(model: str) -> str:
    return (f"download it where the hub is reachable (`huggingface-cli download {model} --local-dir DIR`), copy DIR "
            "here and pass `--model DIR` (Python: `TSAMPipeline.from_pretrained(DIR)`); built-in models that need no "
            f"download: {', '.join(BUILTIN_MODELS)}")


def load_pipeline(model: str, **kwargs: Any) -> Any:
    """``DiffusionPipeline.from_pretrained(model, **kwargs)``, or a built-in such as ``tiny-sd``."""
    where = check_model(model)
    if model in BUILTIN_MODELS:
        return BUILTIN_MODELS[model](**kwargs)
    from diffusers import DiffusionPipeline

    path = os.path.expanduser(model)
    try:
        index = os.path.join(path, "model_index.json")
        name = None
        if os.path.isfile(index):
            with open(index) as f:
                name = json.load(f).get("_class_name")
        if name in PIPELINE_CLASSES:
            module, cls = PIPELINE_CLASSES[name].split(":")
            return getattr(import_module(module), cls).from_pretrained(path, **kwargs)
        return DiffusionPipeline.from_pretrained(path, **where, **dtype_kwargs(kwargs))
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"could not load model {model!r}: {first_line(e)}; pretrained weights are needed: "
                             f"if they are incomplete or missing, {_fix(model)}") from e
