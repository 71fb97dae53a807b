#pragma once
// `xdq run`: the plan of the experiment executed job by job (the pipeline), results gathered in plan
// order. Returns data only; report/experiment_report.h turns it into files.
#include <iosfwd>
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "xdq/experiment/config.h"
#include "xdq/experiment/results.h"

namespace xdq {

// Images [K, C, H, W] in [0, 1] that the report shows as a grid of `columns` (domain strips, the first
// images of a synthesized set); `name` is the picture's file name without ".png".
struct SampleImages {
  std::string name;
  at::Tensor images;
  int columns = 10;
};

struct ExperimentRun {
  ExperimentResults results;
  std::string resolved_config;                    // config.resolved.yaml
  std::map<std::string, std::string> data_files;  // files runs produced (reconstruction loss curves, CSV)
  std::vector<SampleImages> samples;
};

ExperimentRun run_experiment(const ExperimentConfig& cfg, PluginRegistry& registry, std::ostream& progress);

}  // namespace xdq
