"""T-SAM: text self-attention maps guide text-to-image diffusion (Kim, Esmaeili, Qiu, CVPR 2025).

The public names are imported lazily, so that ``tsam --version`` and ``--help`` do not load
diffusers and transformers.
"""
from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("tsam-diffusion")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

_EXPORTS = {
    "TSAMConfig": "config",
    "PRESETS": "config",
    "Diagnostics": "diagnostics",
    "ModelLoadError": "loading",
    "TSAMOutput": "pipeline",
    "TSAMPipeline": "pipeline",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'tsam_diffusion' has no attribute {name!r}")
