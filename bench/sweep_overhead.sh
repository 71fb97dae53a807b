#!/usr/bin/env bash
# Side by side in one run: a 4-job quickstart-sized sweep in one process, then the same sweep as four
# `xdq run --job K` processes and `xdq merge` (what a Slurm array does), startup costs included.
# Prints both wall times, their ratio, and whether the merged results equal the serial ones.
#   bench/sweep_overhead.sh [build]
set -euo pipefail
cd "$(dirname "$0")/.."
xdq="${1:-build}/bin/xdq"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sets=(--set 'calibration.count=[128, 256, 512, 1024]' --set test.count=2000)
t0=$(date +%s.%N)
XDQ_CACHE_DIR="$work/cache_serial" "$xdq" run experiments/quickstart.yaml --out "$work/serial" "${sets[@]}" > "$work/serial.log" 2>&1
t1=$(date +%s.%N)
for k in 0 1 2 3; do
  XDQ_CACHE_DIR="$work/cache_jobs" "$xdq" run experiments/quickstart.yaml --out "$work/jobs" --job "$k" "${sets[@]}" > "$work/job$k.log" 2>&1
done
XDQ_CACHE_DIR="$work/cache_jobs" "$xdq" merge "$work/jobs" > "$work/merge.log" 2>&1
t2=$(date +%s.%N)
python3 - "$t0" "$t1" "$t2" "$work" <<'PY'
import json, sys
t0, t1, t2 = map(float, sys.argv[1:4])
def runs(path):
    data = json.load(open(path))
    for run in data["runs"]:
        run.pop("seconds")
    return data
same = runs(sys.argv[4] + "/serial/results.json") == runs(sys.argv[4] + "/jobs/results.json")
print(f"one process {t1 - t0:.1f} s | 4 x --job + merge {t2 - t1:.1f} s | ratio {(t2 - t1) / (t1 - t0):.3f} | results equal: {same}")
PY
