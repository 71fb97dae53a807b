#!/usr/bin/env bash
# A real Slurm on localhost (munged, slurmctld, slurmd from Debian's slurm-wlm and munge, run as root as
# CI is, configured in a temporary folder and torn down at the end): `xdq submit --slurm` runs a 4-job
# experiment as an array plus a merge job, and its results.json must equal a local `xdq run` of the same
# experiment. Skips (exit 77, with the reason) only where the daemons cannot start.
#   tests/slurm/slurm_test.sh XDQ_BINARY SOURCE_DIR
set -uo pipefail
xdq=$1
source_dir=$2
work=$(mktemp -d /tmp/xdq_slurm.XXXXXX)
skip() { echo "SKIPPED: $*"; cleanup; exit 77; }
fail() { echo "FAILED: $*"; for f in "$work"/log/*.log "$work"/sweep/slurm/*.out; do [ -f "$f" ] && { echo "== $f"; tail -n 20 "$f"; }; done; cleanup; exit 1; }
cleanup() {
  [ -f "$work/slurm.conf" ] && SLURM_CONF="$work/slurm.conf" scancel --user=root > /dev/null 2>&1
  for pid in "$work"/slurmd.pid "$work"/slurmctld.pid "$work"/munge/munged.pid; do
    [ -f "$pid" ] && kill "$(cat "$pid")" > /dev/null 2>&1
  done
  sleep 1
  rm -rf "$work"
}

for tool in munged slurmctld slurmd sbatch squeue; do
  command -v "$tool" > /dev/null || [ -x "/usr/sbin/$tool" ] || skip "$tool is not installed (tools/install-deps.sh installs slurm-wlm and munge)"
done
[ "$(id -u)" = 0 ] || skip "the local Slurm runs its daemons as root"
export PATH="$PATH:/usr/sbin"
host=$(hostname -s)
mkdir -p "$work"/{spool,state,log,munge}
cat > "$work/slurm.conf" <<CONF
ClusterName=xdqtest
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$work/munge/munge.socket
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd.log
SlurmctldPort=16917
SlurmdPort=16918
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
NodeName=$host CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
export SLURM_CONF="$work/slurm.conf"
head -c 1024 /dev/urandom > "$work/munge/munge.key" && chmod 400 "$work/munge/munge.key"
munged --key-file="$work/munge/munge.key" --socket="$work/munge/munge.socket" --pid-file="$work/munge/munged.pid" \
  --log-file="$work/munge/munged.log" --seed-file="$work/munge/seed" -f > /dev/null 2>&1 || skip "munged cannot start"
slurmctld -f "$SLURM_CONF" > /dev/null 2>&1 || skip "slurmctld cannot start"
slurmd -f "$SLURM_CONF" > /dev/null 2>&1 || skip "slurmd cannot start"
for i in $(seq 60); do sinfo -h -o %t 2>/dev/null | grep -q idle && break; sleep 1; done
sinfo -h -o %t 2>/dev/null | grep -q idle || skip "the local Slurm node did not come up: $(sinfo 2>&1 | tail -n 1)"

# A quickstart-sized experiment of 4 jobs (calibration sizes), one thread each.
cat > "$work/exp.yaml" <<YAML
experiment: slurm_check
seed: 0
threads: 1
models:
  - {name: resnet20, path: $source_dir/models/resnet20_fmnist/model.pt}
calibration: {source: fashion_mnist.train, count: [16, 32, 48, 64], batch_size: 64}
test: {domains: [fashion_mnist.test], count: 300}
quantization: {bits: [w8a8, w4a8], calibrators: [minmax, mse]}
analysis: {images: 64}
YAML
export XDQ_CACHE_DIR="$work/cache"
"$xdq" submit "$work/exp.yaml" --out "$work/sweep" --slurm --cpus-per-task 1 || fail "xdq submit"
for i in $(seq 240); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 1; done
[ -z "$(squeue -h 2>/dev/null)" ] || fail "jobs still queued after 240 s: $(squeue)"
[ -f "$work/sweep/results.json" ] || fail "the merge job wrote no results.json"
[ "$(ls -d "$work"/sweep/jobs/*/ | wc -l)" = 4 ] || fail "expected 4 job shards"
"$xdq" run "$work/exp.yaml" --out "$work/local" > "$work/local.log" 2>&1 || fail "local run"
python3 - "$work/sweep/results.json" "$work/local/results.json" <<'PY' || fail "results differ"
import json, sys
def runs(path):
    data = json.load(open(path))
    for run in data["runs"]:
        run.pop("seconds")
        run.pop("peak_rss_mib")
    return data
a, b = runs(sys.argv[1]), runs(sys.argv[2])
assert len(a["runs"]) == 16, len(a["runs"])
assert a == b, "slurm and local results differ"
PY
echo "ok: a 4-task Slurm array and its merge job equal a local run (16 runs)"
# The analysis of the same experiment, one array task per (model, bit setting), into the same folder.
"$xdq" submit "$work/exp.yaml" --out "$work/sweep" --slurm --analyze --cpus-per-task 1 || fail "xdq submit --analyze"
for i in $(seq 240); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 1; done
[ -z "$(squeue -h 2>/dev/null)" ] || fail "analysis jobs still queued after 240 s: $(squeue)"
"$xdq" analyze "$work/exp.yaml" --out "$work/local" >> "$work/local.log" 2>&1 || fail "local analyze"
for setting in resnet20_w8a8 resnet20_w4a8; do
  cmp "$work/sweep/$setting/analysis.json" "$work/local/$setting/analysis.json" || fail "$setting/analysis.json differs"
done
echo "ok: a 2-task Slurm analysis array and its merge equal a local analysis"
cleanup
