"""``tsam study``: create, serve and read a blinded pairwise human study of a benchmark run."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_study_parser(sub: Any, formatter_class: Any = argparse.HelpFormatter) -> None:
    st = sub.add_parser("study", help="human evaluation: a blinded pairwise study of a benchmark run (Tables D, E)",
                        description="A blinded pairwise study that people take in a browser: which of two images (same "
                                    "prompt, same seed, two methods) matches the text better. Items and answers live in "
                                    "the run's database.", formatter_class=formatter_class)
    ssub = st.add_subparsers(dest="study_command", metavar="COMMAND")
    ssub.required = True

    c = ssub.add_parser("create", help="draw the comparisons (reproducibly) into the run's database",
                        description="Draw the study's comparisons from RUN_DIR's images: for each METHOD_A:METHOD_B, "
                                    "--prompts prompts and --seeds seeds of each, drawn with --sample-seed, plus "
                                    "attention checks (one of the images is of another prompt).",
                        formatter_class=formatter_class)
    c.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory written by `tsam bench run`")
    c.add_argument("--pairs", required=True, metavar="A:B,...", help="comparisons, e.g. tsam:vanilla,tsam:conform")
    c.add_argument("--prompts", type=int, default=None, metavar="N", help="prompts per comparison (default: all)")
    c.add_argument("--seeds", type=int, default=None, metavar="K", help="seeds per prompt (default: all)")
    c.add_argument("--sample-seed", type=int, default=0, metavar="S", help="seed of the draw (default: %(default)s)")
    c.add_argument("--check-every", type=int, default=10, metavar="N",
                   help="one attention check per N comparisons, at least one (default: %(default)s)")
    c.set_defaults(func=create_command)

    s = ssub.add_parser("serve", help="serve the study in a browser",
                        description="Serve RUN_DIR's study: participants open http://HOST:PORT/ . Answers are stored as "
                                    "they are given; stopping or restarting the server loses none.",
                        formatter_class=formatter_class)
    s.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory with a study (`tsam study create`)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s; 0.0.0.0 for a network)")
    s.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    s.add_argument("--admin-token", default=None, metavar="TOKEN", help="protect /results with ?token=TOKEN")
    s.set_defaults(func=serve_command, on_interrupt="the server stopped; every answer given is stored")

    r = ssub.add_parser("results", help="win / lose / tie per comparison with intervals",
                        description="Per comparison: win / lose / tie from the first method's side with 95% intervals "
                                    "resampling participants and prompts, participants, answers, agreement, and "
                                    "attention-check failures (flagged participants left out of the main table).",
                        formatter_class=formatter_class)
    r.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory with a study (`tsam study create`)")
    r.set_defaults(func=results_command)


def create_command(args: argparse.Namespace) -> int:
    from .sample import draw, parse_pairs
    from .store import StudyStore

    if args.check_every < 1:
        raise ValueError(f"--check-every must be >= 1, got {args.check_every}")
    items, settings = draw(args.run_dir, parse_pairs(args.pairs), prompts=args.prompts, seeds=args.seeds,
                           sample_seed=args.sample_seed, check_every=args.check_every)
    StudyStore(args.run_dir, create=True).replace_items(items, settings)
    checks = sum(it["kind"] == "check" for it in items)
    print(f"{len(items)} items ({len(items) - checks} comparisons, {checks} attention checks) -> {args.run_dir}",
          file=sys.stderr)
    return 0


def serve_command(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        raise ValueError("`tsam study serve` needs FastAPI and uvicorn: pip install 'tsam-diffusion[study]'") from None
    from .app import create_app

    app = create_app(args.run_dir, admin_token=args.admin_token)
    print(f"study of {args.run_dir} at http://{args.host}:{args.port}/ (Ctrl-C to stop)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def results_command(args: argparse.Namespace) -> int:
    from .results import markdown, study_results
    from .store import StudyStore

    print(markdown(study_results(StudyStore(args.run_dir))))
    return 0
