#!/usr/bin/env bash
# The paper's baselines on ShapesBench (issue 11, docs/tsam-mini.md "The baselines on ShapesBench"),
# end to end; every step resumes, so after an interruption run the same command again.
#
#   bash benchmarks/baselines_shapesbench.sh [RUNS_DIR]        # default: runs
#
# 1. shapes-dev, seeds 0-15: vanilla and each baseline at the step sizes fixed in the plan;
# 2. benchmarks/select_preset.py picks each baseline's configuration by its rule (dev only);
# 3. shapes-test, seeds 0-63: vanilla, T-SAM's mini preset and the chosen configurations, in the
#    same run directory as the T-SAM result (its vanilla and tsam:mini images are reused);
# 4. the per-template table with prompt-resampled intervals (benchmarks/shapes_table.py).
# DEV_SEEDS, TEST_SEEDS, LIMIT (prompts per suite), STEPS and TABLE_JSON override the defaults
# (for a quick trial: LIMIT=6 DEV_SEEDS=0 TEST_SEEDS=0 STEPS=4).
set -euo pipefail
runs=${1:-runs}
dev="$runs/baselines-dev"
test="$runs/v2-test"
extra=()
[[ -n "${LIMIT:-}" ]] && extra+=(--limit "$LIMIT")
[[ -n "${STEPS:-}" ]] && extra+=(--steps "$STEPS")
grid="vanilla,attend-excite[alpha=5],attend-excite,attend-excite[alpha=80],attend-excite[softmax_scale=1],"
grid+="attend-excite[softmax_scale=10],syngen[alpha=5],syngen,syngen[alpha=80],conform[alpha=5],conform,conform[alpha=80]"

tsam bench run --suite shapes-dev --seeds "${DEV_SEEDS:-0-15}" --batch-size 16 --out "$dev" --methods "$grid" "${extra[@]}"
tsam bench score "$dev" --metrics shapes
python benchmarks/select_preset.py "$dev" --json "$dev/selection.json"
chosen=$(python -c 'import json, sys
c = json.load(open(sys.argv[1]))["chosen"]
print(",".join(v for k, v in sorted(c.items()) if k != "tsam" and v != "vanilla"))' "$dev/selection.json")
echo "chosen on shapes-dev: ${chosen:-none (vanilla for every baseline)}"

tsam bench run --suite shapes-test --seeds "${TEST_SEEDS:-0-63}" --batch-size 16 --out "$test" \
  --methods "vanilla,tsam:mini${chosen:+,$chosen}" "${extra[@]}"
tsam bench score "$test" --metrics shapes
python benchmarks/shapes_table.py "$test" --json "${TABLE_JSON:-docs/benchmarks/shapes-test-baselines.json}"
