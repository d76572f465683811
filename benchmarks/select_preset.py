"""Pick a configuration of each method from a scored ShapesBench sweep (run it on ``shapes-dev`` only).

    tsam bench run --suite shapes-dev --seeds 0-15 --out runs/dev \\
        --methods "vanilla,tsam[alpha=1],tsam[alpha=3],tsam[alpha=10],attend-excite[alpha=5],attend-excite"
    tsam bench score runs/dev --metrics shapes
    python benchmarks/select_preset.py runs/dev

Each method (``tsam``, ``attend-excite``, ``syngen``, ``conform``) is chosen on its own: its
configurations compete with vanilla by the rule below.

The rule, fixed before any sweep was run: the method with the highest ``whole`` (every named
object present with its named colour) over the multi-object prompts, among those whose single-object
``whole`` is at most 2 points below vanilla's; ties go to the smaller ``alpha``. Methods are compared
by their paired differences to vanilla (same prompt and seed; the means of a sweep cut short cover
different prompts). It also names the best configuration of each method by the multi-object difference alone,
for when the rule keeps vanilla. Prints every method's rates (multi-object whole, presence and
binding; single-object whole) and paired differences with bootstrap 95% intervals (prompts
resampled), and writes them
with the choices as JSON (``--json``).
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np

from tsam_diffusion.bench.db import RunDB
from tsam_diffusion.bench.report import bootstrap_ci

SINGLE_DROP = 0.02


def method_rates(run_dir: str) -> dict[str, dict[str, object]]:
    db = RunDB(run_dir)
    images = {r["job_id"]: r for r in db.images()}
    values: dict[str, dict[str, float]] = defaultdict(dict)
    for s in db.scores():
        if s["metric"] == "shapes" and "@" not in s["key"]:
            values[s["job_id"]][s["key"]] = s["value"]
    table: dict[str, dict[str, dict[tuple[str, int], float]]] = defaultdict(lambda: defaultdict(dict))
    for job, vals in values.items():
        r = images[job]
        kind = "single" if r["prompt_meta"].get("template") == "one" else "multi"
        for key, v in vals.items():
            table[r["method"]][f"{kind}/{key}"][(r["prompt_id"], r["seed"])] = v
    out: dict[str, dict[str, object]] = {}
    configs = db.methods()
    for method, measures in table.items():
        config = configs[method].get("tsam") or configs[method].get("guidance") or {}
        row: dict[str, object] = {"alpha": config.get("alpha", 0.0),
                                  "family": "vanilla" if method == "vanilla" else config.get("method", "tsam")}
        for name, vals in measures.items():
            row[name] = float(np.mean(list(vals.values())))
            base = table.get("vanilla", {}).get(name, {})
            pairs = [(v - base[k], k[0]) for k, v in vals.items() if k in base]
            if method != "vanilla" and pairs:
                mean, lo, hi = bootstrap_ci([d for d, _ in pairs], groups=[p for _, p in pairs])  # prompts resampled
                row[f"{name} - vanilla"] = [mean, lo, hi]
        row["n_multi"] = len(measures.get("multi/whole", {}))
        out[method] = row
    return out


def _diff(rates: dict[str, dict[str, object]], method: str, name: str) -> float:
    if method == "vanilla":
        return 0.0
    d = rates[method].get(f"{name} - vanilla")
    return float(d[0]) if d else float("-inf")


def _best(rates: dict[str, dict[str, object]], methods: list[str]) -> str | None:
    """The largest multi-object gain over vanilla; ties to the smaller alpha."""
    key = lambda m: (round(_diff(rates, m, "multi/whole"), 9), -float(rates[m]["alpha"]))  # noqa: E731
    return max(methods, key=key) if methods else None


def _of(rates: dict[str, dict[str, object]], family: str | None) -> list[str]:
    return [m for m in rates if family is None or m == "vanilla" or rates[m].get("family") == family]


def choose(rates: dict[str, dict[str, object]], family: str | None = None) -> str:
    """The rule, among vanilla and the configurations of ``family`` (all methods when None)."""
    return _best(rates, [m for m in _of(rates, family) if _diff(rates, m, "single/whole") >= -SINGLE_DROP])


def best_tsam(rates: dict[str, dict[str, object]], family: str | None = None) -> str | None:
    """The largest multi-object gain alone (for when the rule keeps vanilla)."""
    return _best(rates, [m for m in _of(rates, family) if m != "vanilla"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    rates = method_rates(args.run_dir)
    if "vanilla" not in rates:
        raise SystemExit("the run has no scored vanilla images; run `tsam bench score RUN --metrics shapes` first")
    cols = ["multi/whole", "multi/presence", "multi/binding", "single/whole"]
    print(f"{'method':<42}" + "".join(f"{c:>15}" for c in cols) + f"{'n multi':>9}   paired - vanilla [95% CI]: multi/whole; single/whole")
    ci = lambda d: f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]" if d else "-"  # noqa: E731
    for m, r in sorted(rates.items(), key=lambda kv: float(kv[1]["alpha"])):
        print(f"{m:<42}" + "".join(f"{float(r.get(c, float('nan'))):>15.3f}" for c in cols) + f"{r['n_multi']:>9}   "
              f"{ci(r.get('multi/whole - vanilla'))}; {ci(r.get('single/whole - vanilla'))}")
    families = sorted({str(r["family"]) for m, r in rates.items() if m != "vanilla"})
    chosen = {f: choose(rates, f) for f in families}
    best = {f: best_tsam(rates, f) for f in families}
    print()
    for f in families:
        print(f"{f}: chosen by the rule in this script's docstring: {chosen[f]}; best by multi/whole - vanilla: {best[f]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rates": rates, "chosen": chosen, "best": best, "rule": __doc__.split("\n\n")[3]}, f, indent=2)


if __name__ == "__main__":
    main()
