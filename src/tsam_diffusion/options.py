"""Command-line pieces shared by ``tsam generate``, ``tsam bench`` and ``tsam mini``: the default model,
the sampling options, device and dtype resolution, the help formatter."""
from __future__ import annotations

import argparse
import math
import os
import textwrap
from typing import Any

DEFAULT_MODEL = "tsam-mini"
DTYPES = ("float32", "float16", "bfloat16")


class Parser(argparse.ArgumentParser):
    """argparse's parser with usage errors on one line: ``error: tsam generate: <what>; see --help``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {message}; see `{self.prog} --help`\n")


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter without line breaks inside hyphenated words (``tiny-sd``, hub ids)."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False, break_long_words=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return textwrap.fill(" ".join(text.split()), width, initial_indent=indent, subsequent_indent=indent,
                             break_on_hyphens=False, break_long_words=False)


def add_generation_options(parser: argparse.ArgumentParser) -> None:
    """The sampling options shared by ``tsam generate`` and ``tsam bench run``."""
    parser.add_argument("--steps", type=int, default=None, metavar="N",
                        help="denoising steps (default: the model's: 50 for Stable Diffusion, SDXL and PixArt, 28 for SD3 and "
                             "FLUX.1-dev, 4 for FLUX.1-schnell, 25 for tsam-mini)")
    parser.add_argument("--guidance-scale", type=float, default=None, metavar="G",
                        help="classifier-free guidance scale (default: the model's: 7.5 for Stable Diffusion, 5 for SDXL, 4.5 for "
                             "PixArt, 7 for SD3, 4 for tsam-mini; for FLUX.1-dev the distilled guidance, 3.5)")
    parser.add_argument("--height", type=int, default=None, metavar="H", help="image height (default: the model's)")
    parser.add_argument("--width", type=int, default=None, metavar="W", help="image width (default: the model's)")
    parser.add_argument("--device", default="auto", metavar="D", help="torch device; auto (default) = cuda if available, else mps, else cpu")
    parser.add_argument("--dtype", default=None, choices=DTYPES, help="weights dtype (default: float16 on cuda, else float32)")
    add_threads_option(parser)


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads``: torch's CPU threads, ``auto`` by default (or ``$TSAM_NUM_THREADS``)."""
    parser.add_argument("--threads", default=os.environ.get("TSAM_NUM_THREADS", "auto"), metavar="N",
                        help="CPU threads for torch: a number, or auto (default, or $TSAM_NUM_THREADS) = the cores "
                             "that other processes are not busy on, looked at again during long runs; on a shared "
                             "machine more threads than free cores slow every step many times over")


MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit integer


def check_seed(seed: int) -> int:
    """``seed`` if torch can seed a generator with it (0 .. 2**63 - 1), else ValueError."""
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed {seed} is out of range: seeds are integers from 0 to {MAX_SEED}")
    return seed


def check_generation_options(args: argparse.Namespace) -> None:
    """ValueError for sampling options (``add_generation_options``) the pipeline would reject after the
    model has loaded: checked first, so that bad input fails in a second."""
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if args.guidance_scale is not None and not math.isfinite(args.guidance_scale):
        raise ValueError(f"--guidance-scale must be a finite number, got {args.guidance_scale}")
    for name in ("height", "width"):
        value = getattr(args, name)
        if value is not None and (value <= 0 or value % 8):
            raise ValueError(f"--{name} must be a positive multiple of 8, got {value}")


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` if available, else ``mps`` if available, else ``cpu``; other values pass through."""
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(dtype: str | None, device: str) -> Any:
    """The torch dtype for ``--dtype``; by default float16 on CUDA and float32 elsewhere."""
    import torch

    if dtype is None:
        dtype = "float16" if device.startswith("cuda") else "float32"
    return getattr(torch, dtype)


def check_device(device: str) -> None:
    """ValueError for a device string torch does not know or a CUDA/MPS device that is not available."""
    import torch

    try:
        kind = torch.device(device).type
    except RuntimeError as e:
        raise ValueError(f"--device {device!r} is not a valid torch device ({e})") from None
    mps = getattr(torch.backends, "mps", None)
    if (kind == "cuda" and not torch.cuda.is_available()) or (kind == "mps" and not (mps and mps.is_available())):
        raise ValueError(f"--device {device!r} is not available on this machine; try --device cpu or auto")
