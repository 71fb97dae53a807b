#pragma once
// `xdq submit EXP --out DIR --slurm`: a sweep as a Slurm job array, one array task per job of the plan
// (`xdq run --job $SLURM_ARRAY_TASK_ID`, or `xdq analyze --job ...`), and a merge job that runs after the whole array (afterany).
#include <string>
#include <vector>

#include "xdq/experiment/config.h"

namespace xdq::cli {

struct SlurmOptions {
  std::string partition, time;  // empty: the cluster's defaults
  int cpus_per_task = 1;
  int gpus_per_task = 0;
  int max_parallel = 0;  // at most this many array tasks at once (0: no limit)
  std::vector<std::string> sbatch_args;  // extra `#SBATCH` arguments, verbatim
  bool dry_run = false;  // write the files, submit nothing
  bool analyze = false;  // the analysis jobs (`xdq analyze --job`) instead of the sweep's
};

// Every value the scripts would hold (partition, time, --sbatch-arg, the output folder) checked against
// its syntax; an Error naming the option otherwise. submit_to_slurm calls it before writing anything.
void check_slurm_options(const SlurmOptions& options, const std::string& out_dir);

// Writes DIR/experiment.yaml (the resolved config, threads = cpus_per_task), DIR/slurm/array.sbatch and
// DIR/slurm/merge.sbatch; submits both unless dry_run and prints the job ids. Returns the exit status.
int submit_to_slurm(const ExperimentConfig& cfg, const std::string& out_dir, const std::string& xdq_binary,
                    const SlurmOptions& options);

}  // namespace xdq::cli
