"""``tsam mini``: train tsam-mini on ShapesWorld."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_mini_parser(sub, formatter_class=argparse.HelpFormatter) -> None:
    """Add ``mini`` and its subcommands to the ``tsam`` parser's subparsers."""
    from .train import TrainConfig

    mini = sub.add_parser("mini", help="tsam-mini, the small ShapesWorld model: training",
                          formatter_class=formatter_class)
    msub = mini.add_subparsers(dest="mini_command", metavar="COMMAND")
    msub.required = True
    d = TrainConfig()
    t = msub.add_parser("train", help="train tsam-mini (seeded; rerun the same command to resume)",
                        description="Train tsam-mini on freshly rendered ShapesWorld scenes. Checkpoints go to OUT; "
                                    "rerunning the same command resumes; the EMA model is saved to OUT/model.",
                        formatter_class=formatter_class)
    t.add_argument("--out", type=Path, required=True, metavar="DIR")
    t.add_argument("--steps", type=int, default=d.steps, metavar="N", help="total training steps (default: %(default)s)")
    t.add_argument("--batch-size", type=int, default=d.batch_size, metavar="N", help="(default: %(default)s)")
    t.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (default: %(default)s)")
    t.add_argument("--seed", type=int, default=d.seed, help="(default: %(default)s)")
    t.add_argument("--time-budget", type=float, default=None, metavar="MINUTES", help="stop (and checkpoint) after this long")
    t.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="stop (and checkpoint) after N steps of this run; rerun to go on (--steps may grow)")
    t.add_argument("--device", default="cpu", metavar="D")
    t.set_defaults(func=train_command)


def train_command(args: argparse.Namespace) -> int:
    from .train import TrainConfig, train

    if args.steps < 1 or args.batch_size < 1:
        raise ValueError("--steps and --batch-size must be >= 1")
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    model = train(args.out, cfg, device=args.device, time_budget_s=None if args.time_budget is None else args.time_budget * 60,
                  stop_after=args.stop_after)
    print(model)
    print(f"training log: {args.out / 'train_log.csv'}", file=sys.stderr)
    return 0
