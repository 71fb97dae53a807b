#pragma once
// Every file `xdq run` writes, rendered from what the run returned: config.resolved.yaml, results.json,
// results.csv, report.md (runs, gap matrices, per-layer shift, loss curves, samples) and its PNGs.
#include <iosfwd>
#include <map>
#include <string>

#include "xdq/experiment/runner.h"

namespace xdq {

// File name -> bytes.
std::map<std::string, std::string> experiment_report(const ExperimentConfig& cfg, const ExperimentRun& run);

// run_experiment with a shard per finished job in out_dir/jobs, then (unless only one job was asked
// for) experiment_report's files written into `out_dir` at once. With options.merge_only nothing runs:
// the shards there are gathered (`xdq merge`).
ExperimentRun run_experiment_to(const ExperimentConfig& cfg, PluginRegistry& registry, const std::string& out_dir,
                                std::ostream& progress, RunOptions options = {});

}  // namespace xdq
