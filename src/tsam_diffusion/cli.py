"""The ``tsam`` command: generate images with T-SAM guidance from the shell.

    tsam generate "a red circle and a blue square" --compare --save-maps
    tsam generate "a cat and a dog" --model stable-diffusion-v1-5/stable-diffusion-v1-5 --seed 0 1 2
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "tsam-mini"
DTYPES = ("float32", "float16", "bfloat16")
SLUG_MAX = 60

_MODEL_HELP = (
    "hub id or local folder of a diffusers text-to-image pipeline (default: %(default)s). "
    "tsam-mini is the bundled model: trained on ShapesWorld (coloured circles, squares, triangles "
    "and crosses, 32x32), it runs offline on a CPU in seconds. tiny-sd is a built-in random, "
    "untrained Stable Diffusion for smoke tests. For real use pass e.g. "
    "stable-diffusion-v1-5/stable-diffusion-v1-5 or a folder written by save_pretrained; without "
    "network access the weights must already be present locally (Hugging Face cache or a local folder)."
)


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter without line breaks inside hyphenated words (``tiny-sd``, hub ids)."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False, break_long_words=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return textwrap.fill(" ".join(text.split()), width, initial_indent=indent, subsequent_indent=indent,
                             break_on_hyphens=False, break_long_words=False)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``tsam`` and its subcommands."""
    from . import PRESETS, __version__

    parser = argparse.ArgumentParser(
        prog="tsam", description="T-SAM: text self-attention maps guide text-to-image diffusion models.",
        formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"tsam-diffusion {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    g = sub.add_parser(
        "generate", help="generate images for a prompt with T-SAM guidance",
        description="Generate images for PROMPT with T-SAM guidance (and optionally the unguided baseline). "
                    f"The default model, {DEFAULT_MODEL}, is the small bundled ShapesWorld model (offline, CPU).",
        formatter_class=_HelpFormatter)
    g.add_argument("prompt", metavar="PROMPT", help="the text prompt")
    g.add_argument("--model", default=DEFAULT_MODEL, metavar="ID_OR_PATH", help=_MODEL_HELP)
    g.add_argument("--seed", type=int, nargs="+", default=[0], metavar="N", help="one or more seeds, one image each (default: 0)")
    g.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="T-SAM preset (default: the model's own: sd-tifa for Stable Diffusion, mini for tsam-mini)")
    g.add_argument("--alpha", type=float, default=None, metavar="A", help="override the preset's step size alpha")
    g.add_argument("--gamma", type=float, default=None, metavar="G", help="override the preset's exponent gamma")
    add_generation_options(g)
    g.add_argument("--negative-prompt", default=None, metavar="TEXT", help="negative prompt")
    mode = g.add_mutually_exclusive_group()
    mode.add_argument("--compare", action="store_true",
                      help="also generate the unguided baseline with the same seed and a side-by-side image")
    mode.add_argument("--no-tsam", action="store_true", help="generate unguided images only")
    g.add_argument("--save-maps", action="store_true",
                   help="write T, S and the per-token cross-attention maps of each T-SAM image as PNGs")
    g.add_argument("--out", type=Path, default=Path("outputs"), metavar="DIR", help="output folder (default: %(default)s)")
    g.set_defaults(func=generate)

    from .bench.cli import add_bench_parser
    from .mini.cli import add_mini_parser

    add_bench_parser(sub, formatter_class=_HelpFormatter)
    add_mini_parser(sub, formatter_class=_HelpFormatter)
    return parser


def add_generation_options(parser: argparse.ArgumentParser) -> None:
    """The sampling options shared by ``tsam generate`` and ``tsam bench run``."""
    parser.add_argument("--steps", type=int, default=None, metavar="N",
                        help="denoising steps (default: the model's: 50 for Stable Diffusion, 25 for tsam-mini)")
    parser.add_argument("--guidance-scale", type=float, default=None, metavar="G",
                        help="classifier-free guidance scale (default: the model's: 7.5 for Stable Diffusion, 4 for tsam-mini)")
    parser.add_argument("--height", type=int, default=None, metavar="H", help="image height (default: the model's)")
    parser.add_argument("--width", type=int, default=None, metavar="W", help="image width (default: the model's)")
    parser.add_argument("--device", default="auto", metavar="D", help="torch device; auto (default) = cuda if available, else mps, else cpu")
    parser.add_argument("--dtype", default=None, choices=DTYPES, help="weights dtype (default: float16 on cuda, else float32)")


def slugify(prompt: str, max_len: int = SLUG_MAX) -> str:
    """A short, filesystem-safe form of ``prompt``: lowercase ASCII letters and digits joined by '-'."""
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")
    if len(slug) > max_len:  # cut at a word boundary when one is near the limit
        cut = slug[: max_len + 1].rfind("-")
        slug = slug[: cut if cut >= max_len // 2 else max_len].strip("-")
    if not slug:  # e.g. a prompt in a non-Latin script
        slug = "prompt-" + hashlib.sha1(prompt.encode("utf-8")).hexdigest()[:8]
    return slug


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


def _check_device(device: str) -> None:
    """ValueError for a device string torch does not know or a CUDA/MPS device that is not available."""
    import torch

    try:
        kind = torch.device(device).type
    except RuntimeError as e:
        raise ValueError(f"--device {device!r} is not a valid torch device ({e})") from None
    mps = getattr(torch.backends, "mps", None)
    if (kind == "cuda" and not torch.cuda.is_available()) or (kind == "mps" and not (mps and mps.is_available())):
        raise ValueError(f"--device {device!r} is not available on this machine; try --device cpu or auto")


def _fmt(x: float) -> str:
    return f"{x:g}"


def _check_args(args: argparse.Namespace) -> None:
    """Fail fast (ValueError) on arguments the pipeline would reject, before loading a model."""
    if not args.prompt.strip():
        raise ValueError("the prompt is empty or whitespace only; give a text to generate from")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    for name in ("height", "width"):
        value = getattr(args, name)
        if value is not None and (value <= 0 or value % 8):
            raise ValueError(f"--{name} must be a positive multiple of 8, got {value}")
    if args.save_maps and args.no_tsam:
        raise ValueError("--save-maps needs T-SAM guidance; it cannot be combined with --no-tsam")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")


def _quiet_torchvision_notice() -> None:
    """Drop transformers' "requires torchvision" notice (image processors T-SAM never uses)."""
    import logging

    from transformers.utils import logging as hf_logging

    hf_logging.get_logger()  # sets up the library's handler
    for handler in logging.getLogger("transformers").handlers:
        handler.addFilter(lambda record: "requires torchvision" not in record.getMessage())


def generate(args: argparse.Namespace) -> int:
    """``tsam generate``: T-SAM images (and baselines, comparisons, maps) for every seed. Returns 0."""
    _quiet_torchvision_notice()
    import torch

    from . import TSAMConfig, TSAMPipeline, viz
    from .tiny import TINY_NOTE

    _check_args(args)
    overrides = {k: v for k, v in (("alpha", args.alpha), ("gamma", args.gamma)) if v is not None}
    TSAMConfig(**overrides)  # a bad --alpha/--gamma fails before the model loads
    device = resolve_device(args.device)
    _check_device(device)
    dtype = resolve_dtype(args.dtype, device)
    is_tiny = args.model == "tiny-sd"
    if is_tiny:
        print(TINY_NOTE, file=sys.stderr)

    pipe = TSAMPipeline.from_pretrained(args.model, torch_dtype=dtype).to(device)
    preset = args.preset or pipe.adapter.default_preset
    config = None if args.no_tsam else TSAMConfig.preset(preset, **overrides)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    slug = slugify(args.prompt)
    steps, scale = pipe.adapter.sampling_settings(args.steps, args.guidance_scale)
    call = dict(num_inference_steps=steps, guidance_scale=scale, height=args.height,
                width=args.width, negative_prompt=args.negative_prompt)

    def run(seed: int, tsam: TSAMConfig | None):
        generator = torch.Generator(device="cpu").manual_seed(seed)  # same seed, same image on any device
        return pipe(args.prompt, tsam=tsam, generator=generator, **call)

    def save(image: Any, name: str) -> Path:
        path = out / name
        image.save(path)
        print(path)
        return path

    for seed in args.seed:
        stem = f"{slug}_seed{seed}"
        if config is None:
            save(run(seed, None).images[0], f"{stem}_baseline.png")
            continue
        result = run(seed, config)
        tsam_image = result.images[0]
        save(tsam_image, f"{stem}_tsam.png")
        d = result.diagnostics
        diag_path = out / f"{stem}_diagnostics.json"
        _write_json(diag_path, {
            "prompt": args.prompt, "seed": seed, "model": args.model, "config": d.config,
            "tokens": d.tokens[0] if d.tokens else [], **d.summary(),
            "num_inference_steps": steps, "guidance_scale": scale,
            "negative_prompt": args.negative_prompt, "height": tsam_image.height, "width": tsam_image.width,
        })
        print(diag_path)
        if args.compare:
            baseline = run(seed, None).images[0]
            save(baseline, f"{stem}_baseline.png")
            label = f"T-SAM ({preset}, alpha={_fmt(config.alpha)}, gamma={_fmt(config.gamma)})"
            panel = viz.side_by_side([baseline, tsam_image], ["baseline (no guidance)", label],
                                     title=args.prompt, footer=TINY_NOTE if is_tiny else None)
            save(panel, f"{stem}_compare.png")
        if args.save_maps:
            for path in viz.save_diagnostic_maps(d, 0, out, stem, image=tsam_image):
                print(path)
            if not d.updates:
                why = "; ".join(d.notes) or "guidance is disabled (alpha=0 or no update steps)"
                print(f"note: T-SAM made no update for seed {seed} ({why}): no S or token maps to save", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tsam`` console script; returns the exit status."""
    from .bench.metrics import MetricUnavailable
    from .bench.run import BenchError
    from .loading import ModelLoadError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors (2)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    try:
        return args.func(args)
    except ModelLoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (BenchError, MetricUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
