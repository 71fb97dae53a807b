#pragma once
// The quantize recipe: the one sequence from an FP32 graph to a quantized model, written once for the
// pipeline, analyze, the Python module and the benches. Its stages, in order:
//   adapted     graph passes of stage BeforeQuantization on the FP graph, then BatchNorm folded;
//   calibrated  quantizers planned (bits, scheme, overrides), activation ranges from the Calibrator (by
//               what its input() names), weight ranges;
//   rounded     weights rounded by the WeightOptimizer, then the AfterRounding graph passes.
// A caller that shares a stage between runs (an experiment calibrates once per bit setting and
// calibrator, then rounds once per rounding method) calls the stages; everyone else calls quantize().
// Every plugin call goes through its Loaded handle, so a throwing plugin becomes an Error naming it.
#include <cstdint>
#include <iosfwd>
#include <map>
#include <string>
#include <vector>

#include "xdq/plugin/registry.h"
#include "xdq/quant/ptq.h"
#include "xdq/quant/statistics_cache.h"

namespace xdq {

// Everything that decides a quantized model besides the graph and the calibration data.
struct RecipeSettings {
  PtqSettings ptq;  // bits, scheme, per-layer overrides, weight-range method
  PluginChoice calibrator, rounding;  // PluginRegistry::default_choice gives one with default options
  std::vector<PluginChoice> passes;  // graph passes, each run at its declared stage, in this order
  bool fold_bn = true;
  std::int64_t batch_size = 256;  // images per forward pass while calibrating
  int histogram_bins = 2048;      // of the statistics that Statistics calibrators read
  c10::Device device{c10::kCPU};  // where the graph's tensors are (quantize() moves them there)
  std::uint64_t seed = 0;         // of passes and rounding optimizers
};

// The calibration data every stage reads.
struct CalibrationData {
  CalibrationImages images;  // preprocessed, on the CPU, read batch by batch; empty: none (data-free)
  Range input_range;  // of the preprocessed model input, for calibrators that read only the graph
  StatisticsCache* statistics = nullptr;  // statistics kept there (and on disk); null: collected each time
};

// What a run's rounding reports besides the weights (all optional).
struct RoundingOutputs {
  std::map<std::string, std::string>* files = nullptr;  // report files, name -> bytes
  std::string run_name;                                  // unique per run, a prefix for those file names
  std::vector<UnitTiming>* timings = nullptr;            // filled by unit-by-unit optimizers
};

class QuantizeRecipe {
 public:
  // Loads the recipe's plugins from `registry` (its options were validated when chosen); `log` receives
  // progress and what passes changed.
  QuantizeRecipe(const PluginRegistry& registry, RecipeSettings settings, std::ostream& log);

  const RecipeSettings& settings() const { return settings_; }
  // True when adapted() only folds BatchNorm (no pass of stage BeforeQuantization): its result depends
  // on the graph alone, and callers may share one folded graph between calibration sets.
  bool adapts_to_data() const;

  QuantizedModel quantize(const Graph& fp32, const CalibrationData& data, const RoundingOutputs& outputs = {}) const;

  // Taken by value: a caller done with its graph moves it in and nothing is copied.
  Graph adapted(Graph fp32, const CalibrationData& data) const;
  QuantizedModel calibrated(const Graph& folded, const CalibrationData& data) const;
  QuantizedModel rounded(QuantizedModel calibrated, const CalibrationData& data, const RoundingOutputs& outputs = {}) const;

  // The BatchNorm folding of adapted(), for callers that keep a folded graph of their own (shared between
  // jobs, or analysed): BatchNorm layers folded into `graph` when `fold_bn`; returns how many.
  static int fold(Graph& graph, bool fold_bn);

 private:
  struct Pass {
    Loaded<GraphPass> plugin;
    bool after_rounding;
  };
  PassContext pass_context(const CalibrationData& data) const;

  RecipeSettings settings_;
  Loaded<Calibrator> calibrator_;
  Loaded<WeightOptimizer> rounding_;
  std::vector<Pass> passes_;
  std::ostream& log_;
};

// The steps the recipe is made of, for tests that exercise one of them on a model of their own.
// Ranges from statistics collected on the model's graph (Calibrator::Input::Statistics).
void calibrate_from_statistics(QuantizedModel& model, const Loaded<Calibrator>& calibrator,
                               const CalibrationStatistics& statistics);
// Ranges from an observer per activation that sees every batch of `images` (Input::Activations).
void calibrate_activations(QuantizedModel& model, const Loaded<Calibrator>& calibrator, const CalibrationImages& images,
                           std::int64_t batch_size);
// Ranges from the graph's BN statistics alone (Input::Graph); `input_range` is that of the model input.
void calibrate_from_graph(QuantizedModel& model, const Loaded<Calibrator>& calibrator, const Range& input_range);
// An AfterRounding pass on the model's folded graph (it may change biases).
void apply_pass(QuantizedModel& model, const Loaded<GraphPass>& pass, PassContext context);

}  // namespace xdq
