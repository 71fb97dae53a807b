#pragma once
// The files of `xdq analyze`, from what run_analysis measured: per model and bit setting
// <model>_<bits>/analysis.json, mixed_precision.yaml, sqnr.png, pareto.png, and analysis.md.
#include <iosfwd>
#include <map>
#include <string>

#include "xdq/experiment/analysis_runner.h"

namespace xdq {

std::map<std::string, std::string> analysis_report(const ExperimentConfig& cfg, const AnalysisRun& run);

// run_analysis with a shard per finished job in out_dir/analysis_jobs, then (unless only one job was
// asked for) every file written into `out_dir` at once. options.merge_only: the shards there, gathered.
AnalysisRun run_analysis_to(const ExperimentConfig& cfg, PluginRegistry& registry, const std::string& out_dir,
                            std::ostream& progress, RunOptions options = {});

}  // namespace xdq
