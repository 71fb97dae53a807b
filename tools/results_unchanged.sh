#!/usr/bin/env bash
# Runs the refactoring check set and writes each results.json with its timings removed, so two builds
# can be compared with diff:  tools/results_unchanged.sh build OUT_A ; (change, rebuild) ;
# tools/results_unchanged.sh build OUT_B ; diff -r OUT_A/norm OUT_B/norm
# (ONLY=name runs one of them.)
set -euo pipefail
build=${1:?build folder}
out=${2:?output folder}
cd "$(dirname "$0")/.."
xdq="$build/bin/xdq"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "$out/norm"
run() {  # NAME SUBCOMMAND CONFIG [--set ...]
  local name=$1 sub=$2 config=$3
  if [ -n "${ONLY:-}" ] && [ "$ONLY" != "$name" ]; then return; fi
  shift 3
  rm -rf "$out/$name"
  "$xdq" "$sub" "$config" --out "$out/$name" --quiet "$@"
  # Timings, memory and host facts differ between runs; everything else must not.
  /usr/bin/python3 - "$out/$name" "$out/norm/$name" <<'PY'
import json, pathlib, shutil, sys
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
drop = {"seconds", "peak_rss_mib", "units", "started", "finished", "host"}
def clean(x):
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items() if k not in drop and not k.endswith("_seconds")}
    if isinstance(x, list):
        return [clean(v) for v in x]
    return x
dst.mkdir(parents=True, exist_ok=True)
for f in [src / "results.json", *sorted(src.glob("*/analysis.json"))]:
    if f.exists():
        name = f.relative_to(src).as_posix().replace("/", "_")
        json.dump(clean(json.load(open(f))), open(dst / name, "w"), indent=1, sort_keys=True)
if (src / "analysis.csv").exists():
    shutil.copy(src / "analysis.csv", dst / "analysis.csv")
PY
  echo "$name: done"
}
run quickstart run experiments/quickstart.yaml
run cross_dataset_digits run experiments/cross_dataset_digits.yaml
run data_free_dfq run experiments/data_free_dfq.yaml --set test.count=1000
run reconstruction run experiments/reconstruction.yaml --set test.count=500 --set calibration.count=256 \
  --set 'quantization.rounding=[nearest, {name: brecq, iters: 40}, {name: adaround, iters: 40}, {name: qdrop, iters: 40}]' \
  --set 'quantization.bits=[w2a4]'
run data_selection run experiments/data_selection.yaml --set calibration.pool_size=1000 --set 'calibration.count=[64]' \
  --set calibration.repeats=1 --set test.count=300 --set 'models=[{name: resnet20, path: ../models/resnet20_fmnist/model.pt}]'
run analysis analyze experiments/analysis.yaml --set analysis.images=300
