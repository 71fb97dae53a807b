#pragma once
// Post-training quantization of a (BN-folded) graph: where the quantizers sit, activation calibration
// through a Calibrator plugin, weight ranges, and the fake-quantized executor.
//
// Placement: every conv/linear weight, and every value a conv/linear reads (the model input included),
// as the papers' academic setting does; a value read by several layers gets one quantizer.
#include <memory>
#include <string>
#include <vector>

#include "xdq/exec/executor.h"
#include "xdq/plugin/interfaces.h"
#include "xdq/plugin/registry.h"
#include "xdq/quant/scheme.h"

namespace xdq {

struct PtqSettings {
  int w_bits = 8, a_bits = 8;
  Scheme scheme;
  std::vector<LayerOverride> overrides;
  std::string weight_range = "minmax";  // or "mse"
};

class QuantizedModel {
 public:
  // Plans quantizers for `folded` (a graph after fold_batch_norm).
  QuantizedModel(Graph folded, const PtqSettings& settings);

  const Graph& graph() const { return graph_; }
  std::vector<QuantizedLayer>& layers() { return layers_; }
  const std::vector<QuantizedLayer>& layers() const { return layers_; }
  std::vector<ActivationQuantizer>& activations() { return activations_; }
  const std::vector<ActivationQuantizer>& activations() const { return activations_; }

  // FP forward passes over `images` (preprocessed) in batches: the statistics of every quantized
  // activation, with histograms of `bins` bins per sign.
  CalibrationStatistics collect_statistics(const at::Tensor& images, std::int64_t batch_size, int bins) const;
  // Activation ranges -> scale/zero-point, from the calibrator named by its input():
  // from statistics collected on this model's graph (Statistics),
  void calibrate_from_statistics(const Calibrator& calibrator, const PluginRecord& plugin,
                                 const CalibrationStatistics& statistics);
  // from an observer per activation seeing every batch of `images` (Activations),
  void calibrate_activations(const Calibrator& calibrator, const PluginRecord& plugin, const at::Tensor& images,
                             std::int64_t batch_size);
  // from the graph's BN statistics alone (Graph), `input_range` being that of the model input.
  void calibrate_from_graph(const Calibrator& calibrator, const PluginRecord& plugin, const Range& input_range);
  // Weight scale/zero-point from the weight range method.
  void set_weight_ranges(const std::string& method);
  // The rounding plugin fills each layer's quantized_weight (it may also learn activation steps). The
  // caller fills the context's calibration, seed and outputs; the model fills in itself.
  void round_weights(const WeightOptimizer& optimizer, const PluginRecord& plugin, RoundingContext context);
  // Every weight rounded to its nearest grid point (what the `nearest` plugin does; analysis uses it).
  void round_to_nearest();
  // Runs an AfterRounding pass (it may change the biases of the folded graph).
  void apply_pass(const GraphPass& pass, const PluginRecord& plugin, PassContext context);

  // Executor running the quantized model (fake-quantized weights and activations).
  Executor executor() const;

 private:
  // A calibrator's range for `act` (an empty range is the plugin's error) and its scale / zero point.
  static void set_range(ActivationQuantizer& act, const Range& range, const PluginRecord& plugin);

  Graph graph_;
  std::vector<QuantizedLayer> layers_;
  std::vector<ActivationQuantizer> activations_;
};

}  // namespace xdq
