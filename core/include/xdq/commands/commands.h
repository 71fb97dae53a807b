#pragma once
// The entry points that run something and write its files, shared by the command line and the Python
// module: each locks its output folder, runs (experiment/), and writes what report/ renders, all files
// or none. The layer above report/: report/ only renders.
#include <iosfwd>
#include <string>
#include <vector>

#include "xdq/experiment/analysis_runner.h"
#include "xdq/experiment/runner.h"

namespace xdq {

// run_experiment with a shard per finished job in out_dir/jobs, then (unless only one job was asked
// for) experiment_report's files written into `out_dir` at once. With options.merge_only nothing runs:
// the shards there are gathered (`xdq merge`).
ExperimentRun run_experiment_to(const ExperimentConfig& cfg, PluginRegistry& registry, const std::string& out_dir,
                                std::ostream& progress, RunOptions options = {});

// run_analysis with a shard per finished job in out_dir/analysis_jobs, then (unless only one job was
// asked for) every file written into `out_dir` at once. options.merge_only: the shards there, gathered.
AnalysisRun run_analysis_to(const ExperimentConfig& cfg, PluginRegistry& registry, const std::string& out_dir,
                            std::ostream& progress, RunOptions options = {});

// Run `run_id` alone (its job's other runs are not computed), exported into `out` (export.formats)
// with its results.json beside the artefacts. The run's own errors are in the returned result.
ExperimentRun export_run_to(ExperimentConfig cfg, PluginRegistry& registry, const std::string& out,
                            const std::string& run_id, std::ostream& progress);

// `xdq rank`: the overrides that turn an experiment into a ranking of its calibration sets for the test
// domain `target` by `score`: test.domains=[target] and scoring.scorers=[the scorer declaring it, default
// options], searched in the plugin folders. An Error listing the scores declared when none declares `score`.
std::vector<std::string> rank_overrides(PluginRegistry& registry, const std::string& target, const std::string& score);

}  // namespace xdq
