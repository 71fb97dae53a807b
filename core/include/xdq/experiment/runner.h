#pragma once
// `xdq run`: expands the experiment into runs (models x bit settings x calibrators x rounding), executes
// them, and writes config.resolved.yaml, results.json, results.csv and report.md into the output folder.
#include <iosfwd>
#include <map>
#include <string>

#include "xdq/experiment/config.h"
#include "xdq/experiment/results.h"

namespace xdq {

// Runs everything in memory; nothing is written. `pictures` (if given) receives PNG files by name.
ExperimentResults run_experiment(const ExperimentConfig& cfg, PluginRegistry& registry, std::ostream& progress,
                                 std::string* resolved_yaml = nullptr,
                                 std::map<std::string, std::string>* pictures = nullptr);

// Runs and writes the four output files into `out_dir` atomically (all or none).
ExperimentResults run_experiment_to(const ExperimentConfig& cfg, PluginRegistry& registry, const std::string& out_dir,
                                    std::ostream& progress);

}  // namespace xdq
