"""Attend-and-Excite on tsam-mini with and without flushing subnormal numbers (CPU).

    python benchmarks/subnormals.py            # both settings, each in a fresh process
    python benchmarks/subnormals.py --images 8 --prompt "a blue cross" --tokens "blue cross"

A saturated loss (A&E's ``softmax(100 A)`` on tsam-mini: subject maxima of 1e-30) sends gradients
far below float32's normal range back through the UNet; on x86 each operation on such a number is
about a hundred times slower. ``tsam_diffusion.threads.flush_denormals`` (which every ``tsam``
command applies through ``Threads``) treats them as zero. Each setting runs in its own process,
since worker threads take the setting of the thread that starts them. Prints vanilla and A&E
seconds, their ratio, and whether the images are the same.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import json, sys, time, hashlib, torch
flush, prompt, tokens, n, threads = json.loads(sys.argv[1])
if flush:
    from tsam_diffusion.threads import flush_denormals
    flush_denormals()
torch.set_num_threads(threads)
from tsam_diffusion import TSAMPipeline
pipe = TSAMPipeline.from_pretrained("tsam-mini")
pipe.set_progress_bar_config(disable=True)
kw = dict(num_inference_steps=25, output_type="np", num_images_per_prompt=n)
seeds = lambda: [torch.Generator().manual_seed(i) for i in range(n)]
t = time.perf_counter(); v = pipe(prompt, method=None, generator=seeds(), **kw).images; tv = time.perf_counter() - t
t = time.perf_counter(); a = pipe(prompt, method="attend-excite", tokens=tokens, generator=seeds(), **kw).images
ta = time.perf_counter() - t
print(json.dumps({"vanilla_s": tv, "ae_s": ta, "hash": hashlib.sha256(v.tobytes() + a.tobytes()).hexdigest()}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompt", default="a blue cross")
    p.add_argument("--tokens", default="blue cross")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    results = {}
    for flush in (True, False):
        payload = json.dumps([flush, args.prompt, args.tokens, args.images, args.threads])
        out = subprocess.run([sys.executable, "-c", CHILD, payload], capture_output=True, text=True, check=True)
        results[flush] = r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{'flushed' if flush else 'kept   '} subnormals: vanilla {r['vanilla_s']:.1f} s, attend-excite "
              f"{r['ae_s']:.1f} s ({r['ae_s'] / r['vanilla_s']:.1f}x vanilla)", flush=True)
    same = results[True]["hash"] == results[False]["hash"]
    print(f"A&E speed-up from flushing: {results[False]['ae_s'] / results[True]['ae_s']:.1f}x; "
          f"images {'bitwise identical' if same else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
