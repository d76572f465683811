"""Copy a trained tsam-mini into the package (``tsam_diffusion/data/tsam-mini``), UNet in float16.

    python tools/ship_mini.py --run /work/train_mini

``RUN`` is the output folder of ``tsam mini train`` (its EMA model in ``RUN/model``, the loss log in
``RUN/train_log.csv``); what its cross-attention reads (``tsam_mini.json``) goes with it. Float16 storage halves the UNet (18 MB -> 9 MB, under the 20 MB budget);
``TSAMMiniPipeline.from_pretrained`` loads it back as float32 unless told otherwise. The largest
difference this makes to a sample is printed.
"""
from __future__ import annotations

import argparse
import copy
import shutil
from pathlib import Path

import torch

from tsam_diffusion.mini.model import TSAMMiniPipeline, bundled_dir, sampling_scheduler


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True, help="the OUT folder of `tsam mini train`")
    p.add_argument("--dest", type=Path, default=bundled_dir())
    args = p.parse_args()
    pipe = TSAMMiniPipeline.from_pretrained(args.run / "model")
    pipe.scheduler = sampling_scheduler()
    pipe.set_progress_bar_config(disable=True)
    for old in ("unet", "scheduler"):  # the folder's README.md (the weights' card) stays
        shutil.rmtree(args.dest / old, ignore_errors=True)
    half = TSAMMiniPipeline(unet=copy.deepcopy(pipe.unet).half(), text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                            scheduler=pipe.scheduler, text_context=pipe.text_context)
    half.save_pretrained(args.dest)
    shutil.copy(args.run / "train_log.csv", args.dest / "train_log.csv")
    size = sum(f.stat().st_size for f in args.dest.rglob("*") if f.is_file())
    print(f"{args.dest}: {size / 2**20:.1f} MiB")

    shipped = TSAMMiniPipeline.from_pretrained(args.dest)
    shipped.set_progress_bar_config(disable=True)
    kw = dict(num_inference_steps=25, generator=torch.Generator().manual_seed(0), output_type="pt")
    a = pipe("a red circle and a blue square", **kw).images
    kw["generator"] = torch.Generator().manual_seed(0)
    b = shipped("a red circle and a blue square", **kw).images
    print(f"float32 vs shipped float16 weights, same seed: max |pixel difference| {(a - b).abs().max().item() * 127.5:.3f} / 255")


if __name__ == "__main__":
    main()
