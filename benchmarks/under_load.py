"""How much slower tsam commands get when other CPU-heavy processes share the machine.

Runs each workload alone and beside ``--hogs`` busy processes (pure-Python loops, one core each),
with torch's default thread count (one per core: ``--threads N``) and with ``--threads auto`` (the
cores no other process is using, see ``tsam_diffusion.threads``), and prints wall times and the
slowdown against running alone. With H hogs and one tsam process on C cores, a fair share of the
machine is a slowdown of about (H + 1) / C.

    python benchmarks/under_load.py                  # 4 hogs, generate + a 2-prompt bench run
    python benchmarks/under_load.py --hogs 6 --json docs/benchmarks/under_load.json
    python benchmarks/under_load.py --workloads tests   # tests/test_pipeline.py under pytest
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def hog(seconds: float) -> None:
    end = time.time() + seconds
    x = 0
    while time.time() < end:
        x += 1


def workloads(tmp: Path) -> dict[str, list[str]]:
    cli = [sys.executable, "-m", "tsam_diffusion.cli"]
    return {
        "generate": [*cli, "generate", "a red circle and a blue square", "--out", str(tmp / "gen")],
        "bench-run": [*cli, "bench", "run", "--suite", "shapes-dev", "--limit", "2", "--seeds", "0",
                      "--methods", "vanilla,tsam", "--out", str(tmp / "run")],
        # a part of the test suite (in a source checkout): torch in-process, threads set by tests/conftest.py
        "tests": [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                  str(Path(__file__).resolve().parents[1] / "tests" / "test_pipeline.py")],
    }


def timed(cmd: list[str], threads: str) -> float:
    env = {**os.environ, "TSAM_NUM_THREADS": threads, "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hogs", type=int, default=4, help="busy processes beside the command (default: 4)")
    parser.add_argument("--workloads", default="generate,bench-run")
    parser.add_argument("--reps", type=int, default=3, help="runs of each (workload, threads, load); the median is "
                        "reported, with the range: contention makes single runs vary several-fold (default: 3)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    settings = {f"default ({cores} threads)": str(cores), "auto": "auto"}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        commands = workloads(Path(tmp))
        for name in args.workloads.split(","):
            timed(commands[name], "auto")  # warm the file cache; a bench run's second pass would find its images
            for label, threads in settings.items():
                for load in (0, args.hogs):
                    times = []
                    for _ in range(args.reps):
                        for p in Path(tmp).glob("run*"):
                            subprocess.run(["rm", "-rf", str(p)], check=True)
                        procs = [mp.Process(target=hog, args=(3600,), daemon=True) for _ in range(load)]
                        for p in procs:
                            p.start()
                        time.sleep(1.0 if load else 0)
                        try:
                            times.append(timed(commands[name], threads))
                        finally:
                            for p in procs:
                                p.terminate()
                            for p in procs:
                                p.join()
                    seconds = statistics.median(times)
                    rows.append({"workload": name, "threads": label, "hogs": load, "seconds": round(seconds, 2),
                                 "runs": [round(t, 2) for t in times]})
                    print(f"{name:10s} {label:20s} hogs={load}  median {seconds:7.2f} s  "
                          f"(runs: {', '.join(f'{t:.1f}' for t in times)})", flush=True)
    alone = {(r["workload"], r["threads"]): r["seconds"] for r in rows if r["hogs"] == 0}
    print(f"\nslowdown beside {args.hogs} busy processes on {cores} cores (fair share ~{(args.hogs + 1) / cores:.1f}x):")
    for r in rows:
        if r["hogs"]:
            r["slowdown"] = round(r["seconds"] / alone[(r["workload"], r["threads"])], 2)
            lo, hi = min(r["runs"]) / alone[(r["workload"], r["threads"])], max(r["runs"]) / alone[(r["workload"], r["threads"])]
            print(f"  {r['workload']:10s} {r['threads']:20s} {r['slowdown']:6.2f}x  (runs {lo:.1f}x-{hi:.1f}x)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"cores": cores, "hogs": args.hogs, "machine": platform.processor() or platform.machine(),
                                         "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
