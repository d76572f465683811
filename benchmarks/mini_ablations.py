"""tsam-mini ablations: what makes its cross-attention maps localise? Short runs of the same budget.

Each configuration is trained with ``tsam mini train`` (resumable: rerun the same command to go on),
then measured with ``tsam mini probe`` (localisation and cosines of object words' maps) and a small
vanilla check with ShapesJudge (single-object accuracy over the 28 single-object prompts, and
whole-prompt accuracy over the first ``shapes-dev`` prompts). Prints a Markdown table and writes
``OUT/ablations.json``.

Short runs are measured on their raw weights (``OUT/NAME/raw_model``), not only on the EMA model
that training saves: with an EMA decay of 0.999, 400 steps leave 67% of the EMA on the initial weights
(0.999 ** 400), so an EMA model that short is mostly untrained. Both probes are kept.

Selection rule (fixed before any result was seen, issue #10): the highest localisation of object
words at the noise levels T-SAM updates (>= 0.5), among configurations whose vanilla single-object
accuracy is at least 90%.

    python benchmarks/mini_ablations.py --out runs/ablations --steps 500
    python benchmarks/mini_ablations.py --out runs/ablations --steps 500 --only embeddings-nospecial
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CONFIGS: dict[str, list[str]] = {
    "today": [],  # the bundled model's architecture: last layer, [CLS]/[SEP] visible, 8 heads
    "last-nospecial": ["--no-special-tokens"],
    "embeddings": ["--context", "embeddings"],
    "embeddings-nospecial": ["--context", "embeddings", "--no-special-tokens"],
    "layer1-nospecial": ["--context", "layer1", "--no-special-tokens"],
    "embeddings-nospecial-2heads": ["--context", "embeddings", "--no-special-tokens", "--heads", "2"],
    "embeddings-nospecial-ca32": ["--context", "embeddings", "--no-special-tokens", "--cross-attention-32"],
    # a grounding loss on the maps T-SAM reads (TokenCompose's token loss), weight 1 or 0.1
    "today-ground1": ["--grounding", "1"],
    "embeddings-nospecial-ground1": ["--context", "embeddings", "--no-special-tokens", "--grounding", "1"],
    "embeddings-nospecial-ground0.1": ["--context", "embeddings", "--no-special-tokens", "--grounding", "0.1"],
}


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)


def export_raw(folder: Path) -> Path:
    """Save the checkpoint's raw (non-EMA) UNet as a model folder ``folder/raw_model``."""
    import torch

    from tsam_diffusion.mini.model import TSAMMiniPipeline

    pipe = TSAMMiniPipeline.from_pretrained(folder / "model")
    pipe.unet.load_state_dict(torch.load(folder / "checkpoint.pt", weights_only=False, map_location="cpu")["unet"])
    pipe.save_pretrained(folder / "raw_model")
    return folder / "raw_model"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--only", default=None, help="comma-separated configuration names (default: all)")
    parser.add_argument("--scenes", type=int, default=16, help="probe scenes per template")
    parser.add_argument("--eval-seeds", type=int, default=2)
    parser.add_argument("--eval-limit", type=int, default=24, help="shapes-dev prompts in the vanilla check")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(CONFIGS)
    cli = [sys.executable, "-m", "tsam_diffusion.cli"]
    here = Path(__file__).resolve().parent
    results = {}
    summary_path = args.out / "ablations.json"
    if summary_path.is_file():
        results = json.loads(summary_path.read_text())
    for name in names:
        folder = args.out / name
        t0 = time.time()
        run([*cli, "mini", "train", "--out", str(folder), "--steps", str(args.steps), "--batch-size", str(args.batch_size),
             *CONFIGS[name]])
        seconds = time.time() - t0
        raw = export_raw(folder)
        run([*cli, "mini", "probe", "--model", str(folder / "model"), "--scenes", str(args.scenes),
             "--out", str(folder / "probe.json")])
        run([*cli, "mini", "probe", "--model", str(raw), "--scenes", str(args.scenes), "--out", str(folder / "probe_raw.json")])
        run([sys.executable, str(here / "mini_eval.py"), "--model", str(raw), "--seeds", str(args.eval_seeds),
             "--alphas", "0", "--limit", str(args.eval_limit), "--json", str(folder / "eval_raw.json")])
        probe = json.loads((folder / "probe_raw.json").read_text())["summary"]["update_levels"]
        probe_ema = json.loads((folder / "probe.json").read_text())["summary"]["update_levels"]
        evaluation = json.loads((folder / "eval_raw.json").read_text())
        results[name] = {"flags": CONFIGS[name], "steps": args.steps, "train_seconds_this_run": round(seconds),
                         "probe": probe, "probe_ema": probe_ema, "single": evaluation["single"]["whole"],
                         "dev_whole": evaluation["dev"]["0.0"]["all"]["whole"]}
        summary_path.write_text(json.dumps(results, indent=2) + "\n")
    print("\n| configuration | flags | loc. object words | loc. shape | loc. colour | cos shape/shape | cos colour/own "
          "| single-object acc. | dev whole (vanilla) | loc. (EMA model) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        p = r["probe"]
        f = lambda x: "n/a" if x is None else f"{x:.2f}"  # noqa: E731
        print(f"| {name} | `{' '.join(r['flags']) or '(none)'}` | {f(p['loc/all'])} | {f(p['loc/shape'])} | "
              f"{f(p['loc/colour'])} | {p['cos/shape-shape']:.3f} | {p['cos/colour-own']:.3f} | {r['single']:.2f} | "
              f"{r['dev_whole']:.2f} | {f(r.get('probe_ema', {}).get('loc/all'))} |")
    eligible = {n: r for n, r in results.items() if r["single"] >= 0.9}
    if eligible:
        best = max(eligible, key=lambda n: eligible[n]["probe"]["loc/all"])
        print(f"\nselected by the rule: {best}")
    else:
        print("\nno configuration reaches 90% single-object accuracy at this budget: the rule selects none")


if __name__ == "__main__":
    main()
