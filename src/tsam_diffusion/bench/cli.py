"""``tsam bench``: suites, run, score, report, export, import."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_bench_parser(sub, formatter_class=argparse.HelpFormatter) -> None:
    """Add ``bench`` and its subcommands to the ``tsam`` parser's subparsers."""
    from ..options import DEFAULT_MODEL, add_generation_options, add_threads_option
    from .metrics import metric_names
    from .report import MIN_PROMPTS

    bench = sub.add_parser("bench", help="benchmarks the way the paper ran them: suites, runs, metrics, reports",
                           description="Benchmarks: generate a suite with several methods and seeds (resumable, "
                                       "several processes), score the images, write a report.",
                           formatter_class=formatter_class)
    bsub = bench.add_subparsers(dest="bench_command", metavar="COMMAND")
    bsub.required = True

    s = bsub.add_parser("suites", help="list the prompt suites with their sizes",
                        description="List the prompt suites shipped with the package: name, number of prompts, source.",
                        formatter_class=formatter_class)
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
                   "tsam:PRESET, and the paper's baselines attend-excite, syngen and conform (object words read "
                   "from each prompt: shapes-*, ae-*, cc500, geneval's object prompts; syngen parses the others with "
                   "spaCy), each optionally with overrides, e.g. 'tsam[alpha=5;gamma=2]', 'attend-excite[alpha=10]' "
                   "(default: %(default)s)")
    r.add_argument("--model", default=DEFAULT_MODEL, metavar="ID_OR_PATH", help="hub id or local folder (default: %(default)s)")
    r.add_argument("--seeds", default="0", metavar="SPEC", help="seeds: N, N-M or a comma-separated list (default: %(default)s)")
    r.add_argument("--limit", type=int, default=None, metavar="N",
                   help="only N prompts of each suite, spread over its templates (or categories, tags, sources): "
                        "the same N prompts every time, and those of a smaller N are among them")
    r.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="run directory")
    r.add_argument("--batch-size", type=int, default=4, metavar="N", help="seeds of one prompt generated together (default: %(default)s)")
    add_generation_options(r)
    r.set_defaults(func=run_command, on_interrupt="finished images are kept; rerun the same command to continue")

    sc = bsub.add_parser(
        "score", help="add metric values to a run",
        description="Score every image of RUN_DIR that a metric has not scored yet and store the values in its "
                    "database. Rerunning continues where it stopped; under torchrun the images are split between "
                    f"the processes. Metrics: {', '.join(metric_names())}.",
        formatter_class=formatter_class)
    sc.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory written by `tsam bench run`")
    sc.add_argument("--metrics", required=True, metavar="NAMES",
                    help=f"comma-separated metric names, of: {', '.join(metric_names())}")
    sc.add_argument("--batch-size", type=int, default=16, metavar="N",
                    help="images a metric model scores at once; lower it if memory runs out (default: %(default)s)")
    sc.add_argument("--device", default="auto", metavar="D",
                    help="torch device of the metric models; auto (default) = cuda if available, else mps, else cpu")
    add_threads_option(sc)
    sc.add_argument("--option", action="append", default=[], metavar="METRIC.KEY=VALUE",
                    help="a metric option (repeatable), e.g. clip.model=DIR for local CLIP weights or "
                         "tifa.questions=tifa_v1.0_question_answers.json")
    sc.set_defaults(func=score_command, on_interrupt="stored scores are kept; rerun the same command to continue")

    rp = bsub.add_parser(
        "report", help="write report.md and a self-contained report.html",
        description="Write RUN_DIR/report.md and a self-contained HTML report: per suite and method the mean of "
                    "every metric with a 95% interval resampling prompts, paired differences to vanilla, TIFA "
                    "per element type, image grids and the run's configuration.",
        formatter_class=formatter_class)
    rp.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory written by `tsam bench run`")
    rp.add_argument("--out", type=Path, default=None, metavar="HTML", help="the HTML file (default: RUN_DIR/report.html)")
    rp.add_argument("--min-prompts", type=int, default=MIN_PROMPTS, metavar="N",
                    help="a mean over fewer prompts is shown without an interval, and never as a difference that "
                         "excludes 0: an interval that resamples a handful of prompts means little (default: %(default)s)")
    rp.set_defaults(func=report_command)

    ex = bsub.add_parser(
        "export", help="write a run's rows and scores (no images) to one small file",
        description="Write RUN_DIR's finished images' database rows and their scores, without the PNGs, to one "
                    "gzip-compressed JSON-lines file (about 60-150 bytes an image): to archive results, commit them, "
                    "or collect them from machines that share no disk. `tsam bench import` merges such files.",
        formatter_class=formatter_class)
    ex.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory written by `tsam bench run`")
    ex.add_argument("--out", type=Path, required=True, metavar="FILE", help="the export file, e.g. results.jsonl.gz")
    ex.set_defaults(func=export_command)

    im = bsub.add_parser(
        "import", help="merge exported runs into one run directory",
        description="Merge files written by `tsam bench export` into RUN_DIR (made if missing) for `tsam bench "
                    "report` and the benchmark scripts. Every file must have the same settings and the same "
                    "configuration under each method name; jobs already in RUN_DIR keep their rows. The PNGs are "
                    "not in an export: report thumbnails are left out, and `tsam bench run` on RUN_DIR would "
                    "generate those images again.",
        formatter_class=formatter_class)
    im.add_argument("files", type=Path, nargs="+", metavar="FILE", help="files written by `tsam bench export`")
    im.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="the run directory to merge into")
    im.set_defaults(func=import_command)


def suites_command(args: argparse.Namespace) -> int:
    from .suites import list_suites

    rows = list_suites()
    width = max(len(name) for name, _, _ in rows)
    for name, count, description in rows:
        print(f"{name:<{width}}  {count:>5}  {description}")
    return 0


def run_command(args: argparse.Namespace) -> int:
    from ..options import check_device, check_generation_options, resolve_device, resolve_dtype
    from .run import distributed_context, parse_methods, parse_seeds, run_benchmark
    from .suites import load_prompts_file, load_suite, take

    from ..loading import check_model

    check_generation_options(args)
    check_model(args.model)  # missing weights: one message in a second, before the prompts load
    methods = parse_methods(args.methods)
    seeds = parse_seeds(args.seeds)
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    sources = [load_prompts_file(args.prompts)] if args.prompts else [load_suite(name) for name in args.suite]
    prompts = [p for suite in sources for p in take(suite, args.limit)]
    rank, world, local_rank = distributed_context()
    device = resolve_device(args.device)
    check_device(device)
    if device == "cuda" and world > 1:
        device = f"cuda:{local_rank}"
    dtype = resolve_dtype(args.dtype, device)
    group = _init_process_group(device) if world > 1 else False
    try:
        counts = run_benchmark(prompts, methods, seeds, args.out, model=args.model, num_inference_steps=args.steps,
                               guidance_scale=args.guidance_scale, height=args.height, width=args.width,
                               dtype=str(dtype).removeprefix("torch."), device=device, batch_size=args.batch_size,
                               rank=rank, world_size=world, threads=args.threads)
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
    from ..options import check_device, resolve_device
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
    if not names:
        raise ValueError("--metrics names no metric; give e.g. --metrics shapes or --metrics clip,clip-text")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    device = resolve_device(args.device)
    check_device(device)
    counts = score_run(args.run_dir, names, device=device, batch_size=args.batch_size,
                       options=options, rank=rank, world_size=world, threads=args.threads)
    print(", ".join(f"{k}: {v} images scored" for k, v in counts.items()), file=sys.stderr)
    return 0


def report_command(args: argparse.Namespace) -> int:
    from .report import make_report

    if args.min_prompts < 2:
        raise ValueError(f"--min-prompts must be >= 2 (one prompt resampled is no interval), got {args.min_prompts}")
    md, html = make_report(args.run_dir, out_html=args.out, min_prompts=args.min_prompts)
    print(md)
    print(html)
    return 0


def export_command(args: argparse.Namespace) -> int:
    from .archive import export_run

    n = export_run(args.run_dir, args.out)
    print(f"{n} images' rows and scores -> {args.out}", file=sys.stderr)
    return 0


def import_command(args: argparse.Namespace) -> int:
    from .archive import import_runs

    counts = import_runs(args.files, args.out)
    print(f"{counts['imported']} images' rows and scores imported, {counts['already there']} were already there "
          f"-> {args.out}", file=sys.stderr)
    return 0


def _init_process_group(device: str) -> bool:
    """Join torchrun's / accelerate's process group (gloo on CPU, nccl on GPUs), if it is set up."""
    import os

    import torch.distributed as dist

    if not dist.is_available() or dist.is_initialized() or "MASTER_ADDR" not in os.environ:
        return False
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return True
