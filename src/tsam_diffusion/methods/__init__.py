"""Guidance methods, selected by name: T-SAM and the baselines of the paper's comparison.

Each is one module with its equations (a loss over the recorded cross-attention maps) and its
config class; the sampling loop knows none of them by name.

====================  ==================================  =========================================
name                  config                              needs
====================  ==================================  =========================================
``tsam``              ``TSAMConfig`` (presets ``sd-tifa``, nothing (T from the text encoder)
                      ``sd-ae``, ``mini``)
``attend-excite``     ``AttendExciteConfig`` (``ae``)     the objects' words (``tokens=``)
``syngen``            ``SynGenConfig`` (``syngen``)       a spaCy parser model, or ``tokens=`` groups
``conform``           ``ConformConfig`` (``conform``)     the objects' groups of words (``tokens=``)
====================  ==================================  =========================================
"""
from __future__ import annotations

import re
from typing import Any

from .attend_excite import AttendExciteConfig
from .base import GuidanceConfig
from .conform import ConformConfig
from .syngen import SynGenConfig
from .tsam import TSAMConfig

METHODS: dict[str, type[GuidanceConfig]] = {
    cls.method: cls for cls in (TSAMConfig, AttendExciteConfig, SynGenConfig, ConformConfig)}


def method_names() -> list[str]:
    """Every ``NAME`` and ``NAME:PRESET`` a method can be given by."""
    return [n for name, cls in METHODS.items() for n in [name, *(f"{name}:{p}" for p in sorted(cls.presets))]]


def method_class(name: str) -> type[GuidanceConfig]:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    return METHODS[name]


def from_name(spec: str, default_preset: str, **overrides: Any) -> GuidanceConfig:
    """``"tsam"`` (the model's T-SAM preset), ``"tsam:sd-ae"``, ``"attend-excite"``, ``"sd-tifa"`` (a T-SAM preset)."""
    m = re.fullmatch(r"([\w-]+)(?::([\w.-]+))?", spec)
    if m and m.group(1) not in METHODS and m.group(2) is None and m.group(1) in TSAMConfig.presets:
        return TSAMConfig.preset(m.group(1), **overrides)  # a bare T-SAM preset name, as before
    if not m or m.group(1) not in METHODS:
        raise ValueError(f"unknown method {spec!r}; choose one of: {', '.join(method_names())}")
    cls = METHODS[m.group(1)]
    preset = m.group(2) or cls.default_preset or default_preset
    return cls.preset(preset, **overrides)


def resolve_method(method: GuidanceConfig | str | None, default_preset: str) -> GuidanceConfig | None:
    """A pipeline's ``method=`` argument -> a config (or None for plain sampling)."""
    if method is None or isinstance(method, GuidanceConfig):
        return method
    if isinstance(method, str):
        return from_name("tsam" if method == "default" else method, default_preset)
    raise TypeError(f"method must be a guidance config, a method name or None, got {type(method).__name__}")


def config_from_dict(data: dict[str, Any] | None) -> GuidanceConfig | None:
    """The config a ``to_dict()`` came from (a benchmark run's stored method), or None for plain sampling."""
    if data is None:
        return None
    fields = dict(data)
    cls = method_class(fields.pop("method", TSAMConfig.method))
    try:
        return cls(**fields)
    except TypeError as e:
        raise ValueError(f"stored {cls.method} config does not fit this version's {cls.__name__}: {e}") from e


__all__ = ["METHODS", "AttendExciteConfig", "ConformConfig", "GuidanceConfig", "SynGenConfig", "TSAMConfig", "config_from_dict", "from_name", "method_class", "method_names",
           "resolve_method"]
