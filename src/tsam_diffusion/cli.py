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
import warnings
from pathlib import Path
from typing import Any

from . import interrupts
from .files import save_png, write_text
from .options import (DEFAULT_MODEL, HelpFormatter, Parser, add_generation_options, check_device, check_generation_options,
                      check_seed, resolve_device, resolve_dtype)

SLUG_MAX = 60

_MODEL_HELP = (
    "hub id or local folder of a diffusers text-to-image pipeline (default: %(default)s). "
    "tsam-mini is the bundled model: trained on ShapesWorld (coloured circles, squares, triangles "
    "and crosses, 32x32), it runs offline on a CPU in seconds. tiny-sd, tiny-sdxl, tiny-pixart, "
    "tiny-pixart-sigma, tiny-sd3 and tiny-flux are built-in random, untrained pipelines for smoke tests. For real "
    "use pass e.g. stable-diffusion-v1-5/stable-diffusion-v1-5, PixArt-alpha/PixArt-XL-2-512x512, "
    "stabilityai/stable-diffusion-3-medium-diffusers, black-forest-labs/FLUX.1-dev or a folder written by "
    "save_pretrained; without "
    "network access the weights must already be present locally (Hugging Face cache or a local folder)."
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``tsam`` and its subcommands."""
    from . import PRESETS, __version__

    parser = Parser(
        prog="tsam", description="T-SAM: text self-attention maps guide text-to-image diffusion models.",
        formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"tsam-diffusion {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    g = sub.add_parser(
        "generate", help="generate images for a prompt with T-SAM guidance (or a baseline method)",
        description="Generate images for PROMPT with T-SAM guidance, or a baseline method (--method), and "
                    "optionally the unguided baseline. "
                    f"The default model, {DEFAULT_MODEL}, is the small bundled ShapesWorld model (offline, CPU).",
        formatter_class=HelpFormatter)
    g.add_argument("prompt", metavar="PROMPT", help="the text prompt")
    g.add_argument("--model", default=DEFAULT_MODEL, metavar="ID_OR_PATH", help=_MODEL_HELP)
    g.add_argument("--seed", type=int, nargs="+", default=[0], metavar="N", help="one or more seeds, one image each (default: 0)")
    g.add_argument("--method", default="tsam", metavar="NAME",
                   help="guidance method, NAME or NAME:PRESET: tsam (default; needs no token selection) or one of "
                        "the paper's baselines: attend-excite (needs --tokens), conform (needs --token-groups), "
                        "syngen (parses the prompt with spaCy, or takes --token-groups)")
    g.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="T-SAM preset (default: the model's own: sd-tifa for Stable Diffusion, sdxl, pixart, sd3 and flux for "
                        "those families (sdxl, sd3, flux: untuned), mini for tsam-mini); "
                        "same as --method tsam:PRESET")
    g.add_argument("--alpha", type=float, default=None, metavar="A", help="override the method's step size alpha")
    g.add_argument("--gamma", type=float, default=None, metavar="G", help="override T-SAM's exponent gamma")
    toks = g.add_mutually_exclusive_group()
    toks.add_argument("--tokens", default=None, metavar="WORDS",
                      help="the prompt's object words for methods that need them, e.g. 'car,clock' (T-SAM needs none)")
    toks.add_argument("--token-groups", default=None, metavar="GROUPS",
                      help="groups of words that belong together, e.g. 'black car|white clock'; the last word of a "
                           "group is its object")
    add_generation_options(g)
    g.add_argument("--negative-prompt", default=None, metavar="TEXT", help="negative prompt")
    mode = g.add_mutually_exclusive_group()
    mode.add_argument("--compare", action="store_true",
                      help="also generate the unguided baseline with the same seed and a side-by-side image")
    mode.add_argument("--no-tsam", action="store_true", help="generate unguided images only")
    g.add_argument("--save-maps", action="store_true",
                   help="write T, S (T-SAM only) and the per-token cross-attention maps of each guided image as PNGs")
    g.add_argument("--out", type=Path, default=Path("outputs"), metavar="DIR",
                   help="output folder (default: %(default)s); files are named SLUG-HASH_seedN_KIND.png, HASH from "
                        "the full prompt and the settings, so other prompts or settings never overwrite them")
    g.set_defaults(func=generate, on_interrupt="the files listed above are complete; rerun for the other seeds")

    from .analysis.cli import add_analyze_parser
    from .bench.cli import add_bench_parser
    from .mini.cli import add_mini_parser
    from .study.cli import add_study_parser

    add_bench_parser(sub, formatter_class=HelpFormatter)
    add_analyze_parser(sub, formatter_class=HelpFormatter)
    add_study_parser(sub, formatter_class=HelpFormatter)
    add_mini_parser(sub, formatter_class=HelpFormatter)
    return parser


def slugify(prompt: str, max_len: int = SLUG_MAX) -> str:
    """A short, filesystem-safe form of ``prompt``: lowercase ASCII letters and digits joined by '-'
    (``"prompt"`` when none are left, e.g. for a prompt in a non-Latin script)."""
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")
    if len(slug) > max_len:  # cut at a word boundary when one is near the limit
        cut = slug[: max_len + 1].rfind("-")
        slug = slug[: cut if cut >= max_len // 2 else max_len].strip("-")
    return slug or "prompt"


def output_stem(prompt: str, request: dict[str, Any]) -> str:
    """``<slug>-<hash>``: the readable slug of ``prompt`` and 8 hex digits of the SHA-1 of the prompt
    and everything else that shapes the image (``request``), so that two prompts, or one prompt with
    other settings, never write the same file, and the same command writes the same names again."""
    key = json.dumps({"prompt": prompt, **request}, sort_keys=True, default=str)
    return f"{slugify(prompt)}-{hashlib.sha1(key.encode('utf-8')).hexdigest()[:8]}"


def _fmt(x: float) -> str:
    return f"{x:g}"


def _check_args(args: argparse.Namespace) -> None:
    """Fail fast (ValueError) on arguments the pipeline would reject, before loading a model."""
    if not args.prompt.strip():
        raise ValueError("the prompt is empty or whitespace only; give a text to generate from")
    check_generation_options(args)
    for seed in args.seed:
        check_seed(seed)
    if args.save_maps and args.no_tsam:
        raise ValueError("--save-maps needs guidance; it cannot be combined with --no-tsam")
    _method_config(args, "mini")  # an unknown method or a bad value fails before the model loads


def _method_config(args: argparse.Namespace, default_preset: str) -> Any:
    """The guidance config ``--method``/``--preset``/``--alpha``/``--gamma``/``--tokens`` ask for."""
    from .methods import METHODS, from_name, method_names
    from .methods.words import parse_groups

    name = args.method
    base = name.split(":")[0]
    if base not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(method_names())}")
    if base != "tsam" and (args.preset or args.gamma is not None):
        raise ValueError(f"--preset and --gamma are T-SAM's; for {base} give --method {base}:PRESET and --alpha")
    overrides = {k: v for k, v in (("alpha", args.alpha), ("gamma", args.gamma)) if v is not None}
    if args.preset and ":" in name:
        raise ValueError("give the preset once: --method tsam:PRESET or --preset PRESET")
    config = from_name(f"tsam:{args.preset}" if args.preset else name, default_preset, **overrides)
    spec = args.tokens if args.tokens is not None else args.token_groups
    tokens = None if spec is None else parse_groups(spec if args.tokens is None else spec.replace("|", ","))
    if config.needs_tokens and tokens is None and not args.no_tsam:
        raise ValueError(f"{base} needs the prompt's object words: add --tokens 'car,clock' (or --token-groups "
                         "'black car|white clock'); T-SAM needs none")
    return config, tokens


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def generate(args: argparse.Namespace) -> int:
    """``tsam generate``: T-SAM images (and baselines, comparisons, maps) for every seed. Returns 0."""
    from .loading import check_model

    _check_args(args)
    check_model(args.model)  # missing weights: one message in a second, before torch is imported
    import torch

    from . import TSAMPipeline, viz
    from .threads import Threads
    from .tiny import TINY_NOTE

    threads = Threads(args.threads)
    device = resolve_device(args.device)
    check_device(device)
    dtype = resolve_dtype(args.dtype, device)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)  # an unusable folder fails before the model loads
    is_tiny = args.model.startswith("tiny-")  # the built-in random models
    if is_tiny:
        print(TINY_NOTE, file=sys.stderr)
    pipe = TSAMPipeline.from_pretrained(args.model, torch_dtype=dtype).to(device)
    config, tokens = _method_config(args, pipe.adapter.default_preset)
    config = None if args.no_tsam else config
    steps, scale = pipe.adapter.sampling_settings(args.steps, args.guidance_scale)
    call = dict(num_inference_steps=steps, guidance_scale=scale, height=args.height,
                width=args.width, negative_prompt=args.negative_prompt)
    slug = output_stem(args.prompt, {**call, "model": args.model, "dtype": str(dtype),
                                     "tsam": None if config is None else config.to_dict(),
                                     **({"tokens": tokens} if tokens and config is not None and config.uses_tokens else {})})

    def run(seed: int, method: Any):
        threads.adapt()
        generator = torch.Generator(device="cpu").manual_seed(seed)  # same seed, same image on any device
        return pipe(args.prompt, method=method, tokens=tokens if method and method.uses_tokens else None,
                    generator=generator, **call)

    def save(image: Any, name: str) -> Path:
        path = save_png(image, out / name)
        print(path)
        return path

    for seed in args.seed:
        stem = f"{slug}_seed{seed}"
        if config is None:
            save(run(seed, None).images[0], f"{stem}_baseline.png")
            continue
        result = run(seed, config)
        tsam_image = result.images[0]
        save(tsam_image, f"{stem}_{config.method}.png")
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
            label = _label(config)
            panel = viz.side_by_side([baseline, tsam_image], ["baseline (no guidance)", label],
                                     title=args.prompt, footer=TINY_NOTE if is_tiny else None)
            save(panel, f"{stem}_compare.png")
        if args.save_maps:
            for path in viz.save_diagnostic_maps(d, 0, out, stem, image=tsam_image):
                print(path)
            if not d.updates:
                why = "; ".join(d.notes) or "guidance is disabled (alpha=0 or no update steps)"
                print(f"note: {config.method} made no update for seed {seed} ({why}): no S or token maps to save", file=sys.stderr)
    return 0


def _label(config: Any) -> str:
    """``T-SAM (mini, alpha=10, gamma=4)``, ``attend-excite (ae, alpha=20)``: the panel caption of a method."""
    name = "T-SAM" if config.method == "tsam" else config.method
    gamma = f", gamma={_fmt(config.gamma)}" if config.method == "tsam" else ""
    return f"{name} ({config.name}, alpha={_fmt(config.alpha)}{gamma})"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tsam`` console script; returns the exit status.

    Every failure the user can act on ends in one ``error: ...`` line on stderr: 2 for bad input
    (arguments, files, models), 1 for a benchmark or metric that cannot go on. SIGTERM is treated
    like Ctrl-C: the command stops with one line saying how to continue (130, or 143 for SIGTERM).
    """
    format_before, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        return _run(argv)
    finally:
        warnings.formatwarning = format_before


def _run(argv: list[str] | None) -> int:
    from .bench.db import BenchError
    from .bench.metrics import MetricUnavailable

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors (2)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    received: dict[str, str] = {}
    try:
        with interrupts.terminate_as_interrupt() as received:
            return args.func(args)
    except (BenchError, MetricUnavailable) as e:
        return _error(e, 1)
    except (ValueError, TypeError, OSError) as e:  # ModelLoadError is an OSError
        return _error(e, 2)
    except KeyboardInterrupt as e:
        hint = getattr(args, "on_interrupt", None)
        print(f"interrupted{': ' + hint if hint else ''}", file=sys.stderr)
        return 143 if "SIGTERM" in (received.get("signal"), *e.args) else 130


def _one_line_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> str:
    """Warnings on the command line: ``warning: <text>`` on one line, without the source line."""
    return f"warning: {' '.join(str(message).split())}\n"


def _error(e: BaseException, code: int) -> int:
    """Print ``e`` as one ``error:`` line (an OSError without its own words gets its path and cause)."""
    text = " ".join(str(e).split())
    if isinstance(e, OSError) and e.strerror and e.filename and e.strerror in text:
        text = f"cannot use {e.filename}: {e.strerror}; check the path, its permissions and the free disk space"
    print(f"error: {text or type(e).__name__}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
