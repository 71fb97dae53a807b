#pragma once
// The results contract (later features extend it, never break it):
// results.json = {"experiment": str, "xdq_version": str, "runs": [{"id", "model", "w_bits", "a_bits", "calibrator",
//   "rounding", "calibrator_options": {name: value}, "rounding_options": {name: value}, "worst_domain": {"domain",
//   "quant_top1", "drop"} (two test domains or more),
//   "calibration": {"source", "count", "domain", "seed", "selection": {"selector", "options", "passes", "pool_size",
//   "target", "composition": {source domain: images}, "measures": {name: value}, "seconds"} (selected sets)}, "results": [{"domain", "n", "fp32_top1", "quant_top1",
//   "fp32_top1_ci": [low, high], "quant_top1_ci": [low, high] (bootstrap 95 % over the test images, statistics.h),
//   "correct": per-image right/wrong of the quantized model (statistics.h: pack_bits), "scores": {name: value}
//   (scoring:)}],
//   "seconds", "units": [{"name", "iterations", "seconds_per_iteration", "caching_seconds", "step_iterations",
//   "step_seconds_per_iteration", "step_caching_seconds", "seconds"}] (reconstruction runs),
//   "peak_rss_mib", "export": {"dir", "files", "runtime", "int8_layers", "layers", "error", "runtime_error",
//   "layer_gaps": [{"activation", "differing", "max_steps"}], "timings": [{"batch", "threads", "float_ms", "int8_ms"}]}
//   (exported runs; their results then carry "runtime_top1" and "runtime_disagreements")}],
//   "scores": [{"name", "scorer", "higher_is_better", "doc"}] (scoring:)}
// with top-1 as a fraction in [0, 1]. A run that failed has "status": "failed", its "error" and no
// results. results.csv has one row per run x test domain. Written by report/results_tables.h.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json_fwd.hpp>

#include "xdq/export/runtime.h"

#include "xdq/quant/unit_timing.h"

namespace xdq {

struct DomainResult {
  std::string domain;
  std::int64_t n = 0;
  double fp32_top1 = 0.0;
  double quant_top1 = 0.0;
  // The exported model run by the int8 runtime (export.runtime): its top-1, and the images whose top-1
  // differs from the simulated model's; -1 when not measured.
  double runtime_top1 = -1.0;
  std::int64_t runtime_disagreements = -1;
  bool has_runtime() const { return runtime_top1 >= 0; }
  // Per test image, in test order: whether the quantized model's top-1 was right (for paired tests between
  // runs); empty in results written before it was kept.
  std::vector<bool> correct;
  // scoring: every scorer's scores for the run's calibration set against this domain's unlabeled sample.
  std::map<std::string, double> scores;
};

// What `export:` wrote for a run (xdq/export/export.h).
struct ExportRecord {
  std::string dir;                  // folder of the artefacts
  std::vector<std::string> files;
  std::string runtime;              // "opencv" when the runtime check was asked for
  int int8_layers = 0, layers = 0;  // convs the runtime model runs as int8 kernels, of all conv/linear layers
  std::string error;                // the export failed: nothing was written
  std::string runtime_error;        // the runtime could not import or run the model
  // Where the runtime departs from the simulation, per quantized activation in graph order, on the first
  // test batch: the share of its integer codes that differ, and the largest difference in steps.
  struct LayerGap {
    std::string activation;
    double differing = 0.0, max_steps = 0.0;
  };
  std::vector<LayerGap> layer_gaps;
  std::vector<RuntimeTiming> timings;  // ONNX Runtime's speed, float against int8 (export.timing)
  bool requested() const { return !dir.empty() || !error.empty(); }
};

// How the calibration set was chosen from a candidate pool (calibration.selector); empty when it was a
// plain random draw from its domain.
struct SelectionRecord {
  std::string selector;  // label
  std::map<std::string, std::string> options;
  int passes = 0;              // forward passes over the pool the selector declares
  std::int64_t pool_size = 0;
  std::string target;          // target_sample domain, when one was given
  std::map<std::string, std::int64_t> composition;  // chosen images per source domain of the pool
  std::map<std::string, double> measures;           // the selector's objective on the chosen set
  double seconds = 0.0;                             // selection time, features pass included
  bool requested() const { return !selector.empty(); }
};
nlohmann::json selection_json(const SelectionRecord& s);
SelectionRecord selection_from_json(const nlohmann::json& j);

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
  SelectionRecord selection;
  std::vector<DomainResult> results;
  double seconds = 0.0;
  double peak_rss_mib = 0.0;  // the process's peak resident memory when the run ended (all runs before it included)
  std::vector<UnitTiming> units;  // where a reconstruction spent its time, per unit
  ExportRecord exported;
  std::string error;  // non-empty: the run failed (the message names the plugin or file)
  bool failed() const { return !error.empty(); }
};

// A run's "export" object and a domain's fields beyond its top-1 (the runtime's, per-image correctness) in
// JSON (results.json and job shards); an absent or empty object reads as a run that was not exported.
nlohmann::json export_json(const ExportRecord& e);
ExportRecord export_from_json(const nlohmann::json& j);
void add_cell_details_json(const DomainResult& d, nlohmann::json& j);
void read_cell_details_json(const nlohmann::json& j, DomainResult& d);

struct LayerShiftRow {
  std::string model, setting, calibration_domain, layer, domain;
  double clipped_fraction = 0.0, tv_distance = 0.0;
};

// A score the runs carry (scoring:), as its scorer plugin declares it.
struct ScoreDeclaration {
  std::string name, scorer;  // the score, and the label of the scorer that computes it
  bool higher_is_better = true;
  std::string doc;
};

struct ExperimentResults {
  std::string experiment;
  std::vector<ScoreDeclaration> scores;  // in results.json as "scores" when scoring ran
  std::vector<RunResult> runs;
  std::vector<LayerShiftRow> layer_shift;  // in results.json as "layer_shift" when measured
  std::size_t failed_runs() const;
};

// What a report says of the config its results came from (plan.h: results_source).
struct ResultsSource {
  std::string experiment, file, preset, weight_range;
  std::string calibrator;                       // the first calibrator (analysis)
  std::string calibration_domain, test_domain;  // the first of each (analysis)
  std::uint64_t seed = 0;
  // Calibration or test domains, counts, repeats or selectors are swept: the report shows gap matrices.
  bool sweeps_domains = false;
};

// Images [K, C, H, W] in [0, 1] that the report shows as a grid of `columns` (domain strips, the first
// images of a synthesized set); `name` is the picture's file name without ".png".
struct SampleImages {
  std::string name;
  at::Tensor images;
  int columns = 10;
};

}  // namespace xdq
