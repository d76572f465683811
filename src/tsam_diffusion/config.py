"""``TSAMConfig`` and the paper's presets (defined in ``methods/tsam.py``, with T-SAM's objective)."""
from __future__ import annotations

from .methods.tsam import PRESETS, TSAMConfig

__all__ = ["PRESETS", "TSAMConfig"]
