"""T-SAM: text self-attention maps guide text-to-image diffusion (Kim, Esmaeili, Qiu, CVPR 2025)."""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .config import PRESETS, TSAMConfig
from .diagnostics import Diagnostics
from .loading import ModelLoadError
from .pipeline import TSAMOutput, TSAMPipeline

try:
    __version__ = version("tsam-diffusion")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["Diagnostics", "ModelLoadError", "PRESETS", "TSAMConfig", "TSAMOutput", "TSAMPipeline", "__version__"]
