#pragma once
// The results contract (later features extend it, never break it):
// results.json = {"experiment": str, "xdq_version": str, "runs": [{"id", "model", "w_bits", "a_bits", "calibrator",
//   "rounding", "calibrator_options": {name: value}, "rounding_options": {name: value},
//   "calibration": {"source", "count", "domain", "seed"}, "results": [{"domain", "n", "fp32_top1", "quant_top1"}],
//   "seconds", "units": [{"name", "iterations", "seconds_per_iteration", "caching_seconds", "step_iterations",
//   "step_seconds_per_iteration", "step_caching_seconds", "seconds"}] (reconstruction runs),
//   "peak_rss_mib"}]}
// with top-1 as a fraction in [0, 1]. A run that failed has "status": "failed", its "error" and no
// results. results.csv has one row per run x test domain. Written by report/results_tables.h.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "xdq/quant/unit_timing.h"

namespace xdq {

struct DomainResult {
  std::string domain;
  std::int64_t n = 0;
  double fp32_top1 = 0.0;
  double quant_top1 = 0.0;
};

struct RunResult {
  std::string id, model;
  int w_bits = 8, a_bits = 8;
  std::string calibrator, rounding;  // labels (the plugin's name unless the config gave one)
  // Every option of the calibrator and of the rounding plugin (defaults included) as text, so runs that
  // differ only in an option are told apart in results.json, results.csv and DataFrames.
  std::map<std::string, std::string> calibrator_options, rounding_options;
  std::vector<std::string> passes;  // graph passes applied before quantization (in results.json when any)
  std::string calibration_source;  // dataset split, e.g. fashion_mnist.train
  std::string calibration_domain;  // domain name (dataset + transforms)
  std::int64_t calibration_count = 0;
  std::uint64_t calibration_seed = 0;
  std::vector<DomainResult> results;
  double seconds = 0.0;
  double peak_rss_mib = 0.0;  // the process's peak resident memory when the run ended (all runs before it included)
  std::vector<UnitTiming> units;  // where a reconstruction spent its time, per unit
  std::string error;  // non-empty: the run failed (the message names the plugin or file)
  bool failed() const { return !error.empty(); }
};

struct LayerShiftRow {
  std::string model, setting, calibration_domain, layer, domain;
  double clipped_fraction = 0.0, tv_distance = 0.0;
};

struct ExperimentResults {
  std::string experiment;
  std::vector<RunResult> runs;
  std::vector<LayerShiftRow> layer_shift;  // in results.json as "layer_shift" when measured
  std::size_t failed_runs() const;
};

}  // namespace xdq
