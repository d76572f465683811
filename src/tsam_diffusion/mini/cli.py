"""``tsam mini``: train tsam-mini on ShapesWorld."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_mini_parser(sub, formatter_class=argparse.HelpFormatter) -> None:
    """Add ``mini`` and its subcommands to the ``tsam`` parser's subparsers."""
    from ..options import add_threads_option
    from .train import TrainConfig

    mini = sub.add_parser("mini", help="tsam-mini, the small ShapesWorld model: training",
                          description="tsam-mini, the small text-to-image model bundled with the package "
                                      "(coloured shapes at 32x32, see docs/tsam-mini.md): train it again.",
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
    add_threads_option(t)
    t.set_defaults(func=train_command, on_interrupt="checkpoint saved; rerun the same command to resume")


def train_command(args: argparse.Namespace) -> int:
    from ..options import check_device
    from .train import TrainConfig, train

    if args.steps < 1 or args.batch_size < 1:
        raise ValueError("--steps and --batch-size must be >= 1")
    if not args.lr > 0:
        raise ValueError(f"--lr must be > 0, got {args.lr}")
    for name in ("time_budget", "stop_after"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {value}")
    check_device(args.device)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    model = train(args.out, cfg, device=args.device, time_budget_s=None if args.time_budget is None else args.time_budget * 60,
                  stop_after=args.stop_after, threads=args.threads)
    print(model)
    print(f"training log: {args.out / 'train_log.csv'}", file=sys.stderr)
    return 0
