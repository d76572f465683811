"""``tsam bench``: suites, run, score, report."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_bench_parser(sub, formatter_class=argparse.HelpFormatter) -> None:
    """Add ``bench`` and its subcommands to the ``tsam`` parser's subparsers."""
    from ..cli import DEFAULT_MODEL, add_generation_options

    bench = sub.add_parser("bench", help="benchmarks the way the paper ran them: suites, runs, metrics, reports",
                           description="Benchmarks: generate a suite with several methods and seeds (resumable, "
                                       "several processes), score the images, write a report.",
                           formatter_class=formatter_class)
    bsub = bench.add_subparsers(dest="bench_command", metavar="COMMAND")
    bsub.required = True

    s = bsub.add_parser("suites", help="list the prompt suites with their sizes", formatter_class=formatter_class)
    s.set_defaults(func=suites_command)

    r = bsub.add_parser(
        "run", help="generate every (prompt, seed, method) image of a benchmark",
        description="Generate every (prompt, seed, method) image into RUN_DIR: PNG files and a SQLite database. "
                    "Rerunning the same command continues where it stopped. Under torchrun or accelerate launch "
                    "the jobs are split between the processes.",
        formatter_class=formatter_class)
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--suite", action="append", metavar="NAME", help="a suite (repeatable); see `tsam bench suites`")
    src.add_argument("--prompts", type=Path, metavar="FILE", help="your own prompts: .txt (one a line), .jsonl or .csv")
    r.add_argument("--methods", default="vanilla,tsam", help="comma-separated: vanilla, tsam (the model's own preset), "
                   "tsam:PRESET, each T-SAM one optionally with overrides, e.g. 'tsam[alpha=5;gamma=2]' (default: %(default)s)")
    r.add_argument("--model", default=DEFAULT_MODEL, metavar="ID_OR_PATH", help="hub id or local folder (default: %(default)s)")
    r.add_argument("--seeds", default="0", metavar="SPEC", help="seeds: N, N-M or a comma-separated list (default: %(default)s)")
    r.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N prompts of each suite")
    r.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="run directory")
    r.add_argument("--batch-size", type=int, default=4, metavar="N", help="seeds of one prompt generated together (default: %(default)s)")
    add_generation_options(r)
    r.set_defaults(func=run_command)

    sc = bsub.add_parser("score", help="add metric values to a run", formatter_class=formatter_class)
    sc.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    sc.add_argument("--metrics", required=True, help="comma-separated metric names, e.g. clip,clip-text,tifa")
    sc.add_argument("--batch-size", type=int, default=16, metavar="N")
    sc.add_argument("--device", default="auto", metavar="D")
    sc.add_argument("--option", action="append", default=[], metavar="METRIC.KEY=VALUE",
                    help="a metric option, e.g. tifa.questions=tifa_v1.0_question_answers.json or clip.model=DIR")
    sc.set_defaults(func=score_command)

    rp = bsub.add_parser("report", help="write report.md and a self-contained report.html", formatter_class=formatter_class)
    rp.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    rp.add_argument("--out", type=Path, default=None, metavar="HTML", help="the HTML file (default: RUN_DIR/report.html)")
    rp.set_defaults(func=report_command)


def suites_command(args: argparse.Namespace) -> int:
    from .suites import list_suites

    rows = list_suites()
    width = max(len(name) for name, _, _ in rows)
    for name, count, description in rows:
        print(f"{name:<{width}}  {count:>5}  {description}")
    return 0


def run_command(args: argparse.Namespace) -> int:
    from ..cli import resolve_device, resolve_dtype
    from .run import distributed_context, parse_methods, parse_seeds, run_benchmark
    from .suites import load_prompts_file, load_suite

    methods = parse_methods(args.methods)
    seeds = parse_seeds(args.seeds)
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    prompts = load_prompts_file(args.prompts) if args.prompts else [p for name in args.suite for p in load_suite(name)[: args.limit]]
    if args.prompts and args.limit:
        prompts = prompts[: args.limit]
    rank, world, local_rank = distributed_context()
    device = resolve_device(args.device)
    if device == "cuda" and world > 1:
        device = f"cuda:{local_rank}"
    dtype = resolve_dtype(args.dtype, device)
    group = _init_process_group(device) if world > 1 else False
    try:
        counts = run_benchmark(prompts, methods, seeds, args.out, model=args.model, num_inference_steps=args.steps,
                               guidance_scale=args.guidance_scale, height=args.height, width=args.width,
                               dtype=str(dtype).removeprefix("torch."), device=device, batch_size=args.batch_size,
                               rank=rank, world_size=world)
    finally:
        if group:
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()
    who = f"rank {rank}: " if world > 1 else ""
    print(f"{who}{counts['planned']} images planned, {counts['done_before']} were done, {counts['made']} made now "
          f"-> {args.out}", file=sys.stderr)
    return 0


def score_command(args: argparse.Namespace) -> int:
    from ..cli import resolve_device
    from .run import distributed_context
    from .score import score_run

    options: dict[str, dict[str, str]] = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        metric, dot, name = key.partition(".")
        if not (sep and dot and metric and name):
            raise ValueError(f"--option {item!r}: write METRIC.KEY=VALUE, e.g. tifa.questions=FILE")
        options.setdefault(metric, {})[name] = value
    rank, world, _ = distributed_context()
    names = [m.strip() for m in args.metrics.split(",") if m.strip()]
    counts = score_run(args.run_dir, names, device=resolve_device(args.device), batch_size=args.batch_size,
                       options=options, rank=rank, world_size=world)
    print(", ".join(f"{k}: {v} images scored" for k, v in counts.items()), file=sys.stderr)
    return 0


def report_command(args: argparse.Namespace) -> int:
    from .report import make_report

    md, html = make_report(args.run_dir, out_html=args.out)
    print(md)
    print(html)
    return 0


def _init_process_group(device: str) -> bool:
    """Join torchrun's / accelerate's process group (gloo on CPU, nccl on GPUs), if it is set up."""
    import os

    import torch.distributed as dist

    if not dist.is_available() or dist.is_initialized() or "MASTER_ADDR" not in os.environ:
        return False
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return True
