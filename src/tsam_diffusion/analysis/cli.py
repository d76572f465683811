"""``tsam analyze``: the paper's section 4 measurements on any supported model (text, attention, outcomes, sweep)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_analyze_parser(sub: Any, formatter_class: Any = argparse.HelpFormatter) -> None:
    """Add ``analyze`` and its subcommands to the ``tsam`` parser's subparsers."""
    from ..options import DEFAULT_MODEL, DTYPES, add_threads_option

    a = sub.add_parser("analyze", help="the paper's section 4 analysis: why images miss objects and bind attributes wrongly",
                       description="Measurements of the paper's section 4 on your model and prompts. Each command writes "
                                   "figures (PNG and SVG), raw values (CSV) and summary.json to --out, and prints the "
                                   "statistics.", formatter_class=formatter_class)
    asub = a.add_subparsers(dest="analyze_command", metavar="COMMAND")
    asub.required = True

    def model_options(p: argparse.ArgumentParser) -> None:
        src = p.add_mutually_exclusive_group(required=True)
        src.add_argument("--suite", action="append", metavar="NAME",
                         help="a suite (repeatable); templated ones (cc500, ae-*, shapes-*) label word pairs")
        src.add_argument("--prompts", type=Path, metavar="FILE", help="your own prompts: .txt (one a line), .jsonl or .csv")
        p.add_argument("--model", default=DEFAULT_MODEL, metavar="ID_OR_PATH",
                       help="hub id, local folder or built-in name (default: %(default)s)")
        p.add_argument("--limit", type=int, default=None, metavar="N",
                       help="only N prompts of each suite, spread over its templates (as `tsam bench run --limit`)")
        p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
        p.add_argument("--show", type=int, default=3, metavar="N", help="figures of single prompts for the first N (default: %(default)s)")
        device_options(p)

    def device_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--device", default="auto", metavar="D", help="torch device; auto (default) = cuda if available, else cpu")
        p.add_argument("--dtype", default=None, choices=DTYPES, help="weights dtype (default: float16 on cuda, else float32)")
        add_threads_option(p)

    t = asub.add_parser("text", help="embeddings vs self-attention on bound and unbound word pairs; the attention sink",
                        description="Figures 2b, 2c, 6a, 6b: per labelled word pair (bound: attribute and its object; "
                                    "unbound: two objects, or an attribute and another object) the cosine similarity "
                                    "of the text embeddings and the self-attention T'_ij, their distributions and "
                                    "separation (AUC with a prompt-resampled 95% interval, KS); the attention on the "
                                    "sink token (BOS/[CLS]; T5's </s>) against the other tokens; heatmaps of the "
                                    "embedding similarity and T'^3.", formatter_class=formatter_class)
    model_options(t)
    t.add_argument("--embeddings", default="denoiser", choices=("denoiser", "encoder-output"),  # text.EMBEDDINGS
                   help="whose cosine similarity: denoiser (default) = the states the cross-attention keys are made "
                        "from; encoder-output = the text encoder's last hidden states (the same for SD and PixArt; "
                        "tsam-mini's UNet reads MiniLM's input embeddings instead)")
    t.set_defaults(func=text_command)

    at = asub.add_parser("attention", help="embedding similarity vs cross-attention map similarity over denoising",
                         description="Figures 2a, 3, 5: generate each prompt, record the content tokens' cross-attention "
                                     "maps at --steps, and relate, per token pair, the cosine similarity of the text "
                                     "embeddings to C, that of the maps (Pearson, Spearman, scatter per step); "
                                     "per-token maps over the image; with --proposition, Proposition 1's prediction "
                                     "against the measured maps at step 1.", formatter_class=formatter_class)
    model_options(at)
    at.add_argument("--steps", default="1,21,50", metavar="LIST",
                    help="denoising steps to record, 1-based as the paper's figures (default: %(default)s; tsam-mini "
                         "samples 25 steps: e.g. 1,11,25)")
    at.add_argument("--seeds", default="0", metavar="SPEC", help="seeds: N, N-M or a list (default: %(default)s)")
    at.add_argument("--method", default="vanilla", metavar="NAME",
                    help="vanilla (default: no guidance, as the paper's analysis), tsam, tsam:PRESET or a baseline")
    at.add_argument("--sampling-steps", type=int, default=None, metavar="N", help="denoising steps (default: the model's)")
    at.add_argument("--guidance-scale", type=float, default=None, metavar="G", help="CFG scale (default: the model's)")
    at.add_argument("--proposition", action="store_true", help="also check Proposition 1 at step 1 (per layer and head)")
    at.add_argument("--text-share", action="store_true",
                    help="joint-attention models (SD3, Flux): also measure, at step 1, each image position's share of "
                         "probability on the text keys and how much renormalising over them changes the map cosines "
                         "(text_share.csv; docs/design/mmdit.md)")
    at.set_defaults(func=attention_command)

    o = asub.add_parser("outcomes", help="map overlap of judged-correct vs incorrect images (Figure 4)",
                        description="Figure 4: for the scored images of a benchmark run (shapes or tifa scores) with two "
                                    "or more objects, replay each image's seed to record its maps at --step and compare "
                                    "the map similarity of the two objects (presence) and of each attribute and its "
                                    "object (binding) between correct and incorrect images. Replayed values are saved as "
                                    "they are made; rerun the same command to continue.", formatter_class=formatter_class)
    o.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a scored run directory (`tsam bench run`, `tsam bench score`)")
    o.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    o.add_argument("--step", type=int, default=10, metavar="K", help="the denoising step, 1-based (default: %(default)s, the paper's)")
    o.add_argument("--methods", default="vanilla", metavar="NAMES", help="the run's methods to analyse, comma-separated (default: %(default)s)")
    o.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N eligible images")
    o.add_argument("--batch-size", type=int, default=16, metavar="N", help="seeds replayed together (default: %(default)s)")
    device_options(o)
    o.set_defaults(func=outcomes_command, on_interrupt="replayed images are kept; rerun the same command to continue")

    sw = asub.add_parser("sweep", help="a metric over a run's method overrides (Tables B and C)",
                         description="Tables B and C: one row per method of RUN_DIR with its overrides (e.g. "
                                     "tsam[alpha=10;gamma=4]), the metric's mean with a prompt-resampled 95% interval "
                                     "and the paired difference from the baseline; a grid and a plot when two "
                                     "parameters vary.", formatter_class=formatter_class)
    sw.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a scored run directory")
    sw.add_argument("--metric", required=True, metavar="METRIC/KEY", help="e.g. shapes/whole, tifa/score, clip/full")
    sw.add_argument("--baseline", default="vanilla", metavar="METHOD", help="the method differences are taken from (default: %(default)s)")
    sw.add_argument("--out", type=Path, default=None, metavar="DIR", help="output folder (default: RUN_DIR/sweep)")
    sw.set_defaults(func=sweep_command)


def _prompts(args: argparse.Namespace) -> list[Any]:
    from ..bench.suites import load_prompts_file, load_suite, take

    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    if args.show < 0:
        raise ValueError(f"--show must be >= 0, got {args.show}")
    sources = [load_prompts_file(args.prompts)] if args.prompts else [load_suite(name) for name in args.suite]
    return [p for suite in sources for p in take(suite, args.limit)]


def _load(model: str, args: argparse.Namespace) -> Any:
    from ..loading import check_model
    from ..options import check_device, resolve_device, resolve_dtype
    from ..pipeline import TSAMPipeline
    from ..threads import Threads

    check_model(model)
    device = resolve_device(args.device)
    check_device(device)
    Threads(args.threads)
    return TSAMPipeline.from_pretrained(model, torch_dtype=resolve_dtype(args.dtype, device)).to(device)


def text_command(args: argparse.Namespace) -> int:
    from .text import analyze_text, report

    prompts = _prompts(args)
    pipe = _load(args.model, args)
    summary = analyze_text(pipe.adapter, prompts, args.out, show=args.show, model=args.model, embeddings=args.embeddings)
    print(report(summary))
    print(f"-> {args.out}", file=sys.stderr)
    return 0


def attention_command(args: argparse.Namespace) -> int:
    from ..bench.run import parse_seeds
    from .attention import analyze_attention, report

    try:
        steps = [int(s) for s in args.steps.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--steps takes comma-separated step numbers, e.g. 1,21,50; got {args.steps!r}") from None
    seeds = parse_seeds(args.seeds)
    if args.sampling_steps is not None and args.sampling_steps < 1:
        raise ValueError(f"--sampling-steps must be >= 1, got {args.sampling_steps}")
    prompts = _prompts(args)
    pipe = _load(args.model, args)
    method = None if args.method == "vanilla" else args.method
    summary = analyze_attention(pipe, prompts, args.out, steps=steps, seeds=seeds, method=method,
                                num_inference_steps=args.sampling_steps, guidance_scale=args.guidance_scale,
                                show=args.show, proposition=args.proposition, text_share=args.text_share,
                                model=args.model)
    print(report(summary))
    print(f"-> {args.out}", file=sys.stderr)
    return 0


def outcomes_command(args: argparse.Namespace) -> int:
    from ..bench.db import RunDB
    from .outcomes import analyze_outcomes, report

    if args.step < 1:
        raise ValueError(f"--step is 1-based (1 is the first denoising step), got {args.step}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    settings = RunDB(args.run_dir, create=False).settings()
    model = settings["model"]
    args.dtype = args.dtype or settings.get("dtype")  # replay as the run sampled
    summary = analyze_outcomes(lambda: _load(model, args), args.run_dir, args.out, step=args.step, methods=methods,
                               limit=args.limit, batch_size=args.batch_size)
    print(report(summary))
    print(f"-> {args.out}", file=sys.stderr)
    return 0


def sweep_command(args: argparse.Namespace) -> int:
    from .sweep import sweep

    summary = sweep(args.run_dir, args.out or args.run_dir / "sweep", metric=args.metric, baseline=args.baseline)
    print(summary["text"])
    return 0
