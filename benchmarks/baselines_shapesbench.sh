#!/usr/bin/env bash
# The paper's baselines on ShapesBench (issue 11, docs/tsam-mini.md "The baselines on ShapesBench"),
# end to end and resumable across machines:
#
#   bash benchmarks/baselines_shapesbench.sh [RUNS_DIR]        # default: runs
#
# The work is cut into shards (about 15-40 minutes each on 2 CPU cores). Each finished shard's results
# (rows and scores, no images: `tsam bench export`) go to ARCHIVE, a folder meant to be committed, so
# the work survives machines that do not keep RUNS_DIR; shards already archived are skipped, and a shard
# cut off midway resumes from RUNS_DIR when it is still there. Rerun the same command to continue.
#
# 1. shapes-dev (48 prompts, seeds 0-7): vanilla and the grid of baseline configurations fixed in the plan;
# 2. benchmarks/select_preset.py picks each baseline's configuration by its rule (dev only); where the
#    rule keeps vanilla, the baseline's paper settings go to test, so that every baseline has a row;
# 3. shapes-test (all 116 prompts, TEST_SEEDS): vanilla, T-SAM's mini preset and the baselines;
# 4. the per-template table with prompt-resampled intervals over every test seed archived so far
#    (benchmarks/shapes_table.py); more seeds later: TEST_SEEDS=8-15 bash benchmarks/baselines_shapesbench.sh
#
# Environment: ARCHIVE (default docs/benchmarks/shapes-baselines), DEV_LIMIT (48), DEV_SEEDS (0-7),
# DEV_SHARDS (8), TEST_SEEDS (0-7), TEST_SHARDS (16), BATCH (8), THREADS (torch CPU threads, default auto), TABLE_JSON
# (default docs/benchmarks/shapes-test-baselines.json); for a quick trial LIMIT (prompts of each suite)
# and STEPS, e.g. LIMIT=6 DEV_SEEDS=0 TEST_SEEDS=0 STEPS=1 DEV_SHARDS=2 TEST_SHARDS=2 ARCHIVE=/tmp/a.
set -euo pipefail
runs=${1:-runs}
archive=${ARCHIVE:-docs/benchmarks/shapes-baselines}
batch=${BATCH:-8}
extra=()
[[ -n "${STEPS:-}" ]] && extra+=(--steps "$STEPS")
grid="vanilla,attend-excite,attend-excite[softmax_scale=1],attend-excite[softmax_scale=10],"
grid+="syngen[alpha=5],syngen,syngen[alpha=80],conform[alpha=5],conform,conform[alpha=80]"

# shards NAME SUITE SEEDS N LIMIT METHODS: generate, score and archive each shard not archived yet, then
# merge every archived shard of NAME into RUNS_DIR/NAME/all.
shards() {
  local name=$1 suite=$2 seeds=$3 n=$4 limit=$5 methods=$6 k
  local lim=()
  [[ -n "$limit" ]] && lim=(--limit "$limit")
  mkdir -p "$archive"
  # the archive holds one plan per NAME: a trial (or another plan) never mixes into it unseen
  local plan="suite=$suite seeds=$seeds shards=$n limit=${limit:-all} batch=$batch steps=${STEPS:-model} methods=$methods"
  if [[ -f "$archive/$name.plan" && "$(cat "$archive/$name.plan")" != "$plan" ]]; then
    echo "error: $archive holds $name shards of another plan:" >&2
    echo "  archived: $(cat "$archive/$name.plan")" >&2
    echo "  now:      $plan" >&2
    echo "use the same settings to continue, or ARCHIVE=another folder" >&2
    exit 1
  fi
  echo "$plan" > "$archive/$name.plan"
  for ((k = 0; k < n; k++)); do
    local file="$archive/$name-shard-$k-of-$n.jsonl.gz" dir="$runs/$name/shard-$k-of-$n"
    [[ -f "$file" ]] && continue
    echo "== $name: shard $k of $n"
    RANK=$k WORLD_SIZE=$n tsam bench run --suite "$suite" --seeds "$seeds" --batch-size "$batch" --out "$dir" \
      --methods "$methods" --threads "${THREADS:-auto}" "${lim[@]}" "${extra[@]}"
    tsam bench score "$dir" --metrics shapes
    tsam bench export "$dir" --out "$file"
  done
  tsam bench import "$archive/$name"-shard-*-of-"$n".jsonl.gz --out "$runs/$name/all"
}

shards dev shapes-dev "${DEV_SEEDS:-0-7}" "${DEV_SHARDS:-8}" "${LIMIT:-${DEV_LIMIT:-48}}" "$grid"
python benchmarks/select_preset.py "$runs/dev/all" --json "$archive/selection.json"
chosen=$(python -c 'import json, sys
c = json.load(open(sys.argv[1]))["chosen"]
print(",".join(k if v == "vanilla" else v for k, v in sorted(c.items()) if k != "tsam"))' "$archive/selection.json")
echo "on shapes-test (chosen on shapes-dev; a bare name = the rule kept vanilla, paper settings shown): $chosen"

seeds=${TEST_SEEDS:-0-7}
shards "test-seeds$seeds" shapes-test "$seeds" "${TEST_SHARDS:-16}" "${LIMIT:-}" "vanilla,tsam:mini,$chosen"
# every block of test seeds whose shards are all archived (a half-done block would weigh some prompts more)
complete=()
for plan in "$archive"/test-seeds*.plan; do
  block=$(basename "$plan" .plan) n=$(sed -n 's/.* shards=\([0-9]*\) .*/\1/p' "$plan")
  files=("$archive/$block"-shard-*-of-"$n".jsonl.gz)
  if [[ ${#files[@]} -eq $n && -f "${files[0]}" ]]; then complete+=("${files[@]}"); else echo "$block: not complete, left out of the table"; fi
done
tsam bench import "${complete[@]}" --out "$runs/test-all"
python benchmarks/shapes_table.py "$runs/test-all" --json "${TABLE_JSON:-docs/benchmarks/shapes-test-baselines.json}"
