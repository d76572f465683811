"""T-SAM: text self-attention maps guide text-to-image diffusion (Kim, Esmaeili, Qiu, CVPR 2025).

The public names are imported lazily, so that ``tsam --version`` and ``--help`` do not load
diffusers and transformers.
"""
from __future__ import annotations

import logging
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any


def _drop_torchvision_notice(record: logging.LogRecord) -> bool:
    """transformers' "`CLIPImageProcessor` requires torchvision (not installed); falling back to ..."
    notice, logged when diffusers imports image processors that T-SAM never uses."""
    return "requires torchvision" not in record.getMessage()


# A filter on the logger that emits the notice (plain logging: transformers is not imported here).
logging.getLogger("transformers.utils.import_utils").addFilter(_drop_torchvision_notice)

try:
    __version__ = version("tsam-diffusion")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

_EXPORTS = {
    "TSAMConfig": "config",
    "PRESETS": "config",
    "AttendExciteConfig": "methods",
    "METHODS": "methods",
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
