"""``tsam mini``: train tsam-mini on ShapesWorld."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_mini_parser(sub, formatter_class=argparse.HelpFormatter) -> None:
    """Add ``mini`` and its subcommands to the ``tsam`` parser's subparsers."""
    from ..options import add_threads_option
    from .context import SOURCES
    from .probe import LEVELS
    from .train import DEFAULT_RECIPE, RECIPES, TrainConfig, describe
    from .world import TEMPLATES

    mini = sub.add_parser("mini", help="tsam-mini, the small ShapesWorld model: training, attention probe",
                          description="tsam-mini, the small text-to-image model bundled with the package "
                                      "(coloured shapes at 32x32, see docs/tsam-mini.md): train it again, or "
                                      "measure where its cross-attention looks.",
                          formatter_class=formatter_class)
    msub = mini.add_subparsers(dest="mini_command", metavar="COMMAND")
    msub.required = True
    d = TrainConfig()
    t = msub.add_parser("train", help="train tsam-mini (seeded; rerun the same command to resume)",
                        description="Train tsam-mini on freshly rendered ShapesWorld scenes. Checkpoints go to OUT; "
                                    "rerunning the same command resumes; the EMA model is saved to OUT/model.",
                        formatter_class=formatter_class)
    t.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="run folder: checkpoint.pt, train_log.csv and the trained model in DIR/model")
    t.add_argument("--steps", type=int, default=d.steps, metavar="N", help="total training steps (default: %(default)s)")
    t.add_argument("--batch-size", type=int, default=d.batch_size, metavar="N", help="scenes per step (default: %(default)s)")
    t.add_argument("--lr", type=float, default=d.lr, metavar="LR", help="peak learning rate (default: %(default)s)")
    t.add_argument("--seed", type=int, default=d.seed, metavar="N",
                   help="seed of the weights' initialisation, the scenes and the noise (default: %(default)s)")
    t.add_argument("--time-budget", type=float, default=None, metavar="MINUTES", help="stop (and checkpoint) after this long")
    t.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="stop (and checkpoint) after N steps of this run; rerun to go on (--steps may grow)")
    t.add_argument("--device", default="cpu", metavar="D", help="torch device to train on (default: %(default)s)")
    arch = t.add_argument_group("recipe and architecture (default: the bundled model's, recipe "
                                f"{DEFAULT_RECIPE}; each option below overrides the recipe)")
    arch.add_argument("--recipe", default=DEFAULT_RECIPE, choices=sorted(RECIPES),
                      help=f"v2: the bundled model ({describe(RECIPES['v2'])}); v1: the first bundled model, whose maps "
                           f"are nearly uniform ({describe(RECIPES['v1'])}); grounded: the ablations' choice, whose maps "
                           f"localise but whose images are worse ({describe(RECIPES['grounded'])}) (default: %(default)s)")
    arch.add_argument("--context", default=None, choices=SOURCES,
                      help="what the cross-attention reads of the text encoder: its last layer (every token carries the "
                           "whole caption), its input embeddings (each token only itself) or layer K")
    arch.add_argument("--special-tokens", dest="special_tokens", action=argparse.BooleanOptionalAction, default=None,
                      help="show [CLS] and [SEP] to the cross-attention or hide them (an attention sink there can absorb the maps)")
    arch.add_argument("--heads", type=int, default=None, metavar="N",
                      help="heads per attention layer; head width = channels / N")
    arch.add_argument("--cross-attention-32", action=argparse.BooleanOptionalAction, default=None,
                      help="cross-attention at 32x32 too (else 16x16 and 8x8 only)")
    arch.add_argument("--grounding", type=float, default=None, metavar="W",
                      help="weight of a grounding loss that pulls each object word's cross-attention map (the layers "
                           "T-SAM reads) onto its object, TokenCompose's token loss; 0 = none")
    add_threads_option(t)
    t.set_defaults(func=train_command, on_interrupt="checkpoint saved; rerun the same command to resume")

    pr = msub.add_parser(
        "probe", help="measure whether the cross-attention maps sit on the objects their words name",
        description="Render ShapesWorld scenes with known object masks, noise them to several levels of the "
                    "model's schedule, run one conditional denoiser pass and read the maps of the layers T-SAM "
                    "reads. Per object word: the map's mass on its object over the object's area (1.0 = uniform), "
                    "and the cosines between words' maps. Prints a table and writes JSON.",
        formatter_class=formatter_class)
    pr.add_argument("--model", default="tsam-mini", metavar="ID_OR_PATH",
                    help="tsam-mini (default, the bundled model) or a folder written by `tsam mini train` (DIR/model)")
    pr.add_argument("--scenes", type=int, default=16, metavar="N", help="scenes per template (default: %(default)s)")
    pr.add_argument("--levels", default=",".join(f"{lv:g}" for lv in LEVELS), metavar="L,L,...",
                    help="noise levels, fractions of the schedule in (0, 1] (default: %(default)s)")
    pr.add_argument("--templates", default=",".join(TEMPLATES), metavar="T,T,...",
                    help="ShapesWorld templates (default: all: %(default)s)")
    pr.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the scenes and the noise (default: %(default)s)")
    pr.add_argument("--out", type=Path, default=Path("outputs") / "probe.json", metavar="JSON",
                    help="where to write the figures (default: %(default)s)")
    pr.add_argument("--device", default="cpu", metavar="D", help="torch device (default: %(default)s)")
    add_threads_option(pr)
    pr.set_defaults(func=probe_command)


def train_command(args: argparse.Namespace) -> int:
    from ..options import check_device
    from .train import RECIPES, TrainConfig, train

    if args.steps < 1 or args.batch_size < 1:
        raise ValueError("--steps and --batch-size must be >= 1")
    if not args.lr > 0:
        raise ValueError(f"--lr must be > 0, got {args.lr}")
    for name in ("time_budget", "stop_after"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {value}")
    check_device(args.device)
    arch = {**RECIPES[args.recipe], **{k: getattr(args, k) for k in RECIPES[args.recipe] if getattr(args, k) is not None}}
    if arch["heads"] < 1 or 128 % arch["heads"] or 32 % arch["heads"]:
        raise ValueError(f"--heads must divide the channel counts 32, 64 and 128 (1, 2, 4, 8, 16 or 32), got {arch['heads']}")
    if not 0 <= arch["grounding"] < float("inf"):
        raise ValueError(f"--grounding must be a finite number >= 0, got {arch['grounding']}")
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, **arch)
    model = train(args.out, cfg, device=args.device, time_budget_s=None if args.time_budget is None else args.time_budget * 60,
                  stop_after=args.stop_after, threads=args.threads)
    print(model)
    print(f"training log: {args.out / 'train_log.csv'}", file=sys.stderr)
    return 0


def probe_command(args: argparse.Namespace) -> int:
    from ..options import check_device
    from ..threads import Threads
    from .probe import format_table, run_probe, write_json
    from .world import TEMPLATES

    try:
        levels = [float(x) for x in args.levels.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--levels {args.levels!r}: give comma-separated numbers in (0, 1], e.g. 0.9,0.5") from None
    if not levels or any(not 0 < lv <= 1 for lv in levels):
        raise ValueError(f"--levels must be numbers in (0, 1], got {args.levels!r}")
    templates = [t.strip() for t in args.templates.split(",") if t.strip()]
    unknown = [t for t in templates if t not in TEMPLATES]
    if unknown or not templates:
        raise ValueError(f"--templates: unknown {unknown or args.templates!r}; valid: {', '.join(TEMPLATES)}")
    if args.scenes < 1:
        raise ValueError(f"--scenes must be >= 1, got {args.scenes}")
    from ..loading import check_model

    check_model(args.model)
    check_device(args.device)
    Threads(args.threads).adapt()
    args.out.parent.mkdir(parents=True, exist_ok=True)  # an unusable folder fails before the model loads
    from ..adapters.mini import MiniAdapter
    from ..pipeline import TSAMPipeline

    pipe = TSAMPipeline.from_pretrained(args.model).to(args.device)
    if not isinstance(pipe.adapter, MiniAdapter):
        raise ValueError(f"--model {args.model!r} is not a tsam-mini model; the probe renders ShapesWorld scenes")
    result = run_probe(pipe, levels=levels, templates=templates, per_template=args.scenes, seed=args.seed)
    result["model"] = args.model
    print(format_table(result))
    print(write_json(result, args.out), file=sys.stderr)
    return 0
