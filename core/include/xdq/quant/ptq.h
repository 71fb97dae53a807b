#pragma once
// Post-training quantization of a (BN-folded) graph: where the quantizers sit, their ranges, weight
// ranges, and the fake-quantized executor. Plugins act on it through xdq/plugin/quantize.h.
//
// Placement: every conv/linear weight; activations as the preset's Placement says (scheme.h), by default
// every value a conv/linear reads (the model input included); a value read by several layers gets one
// quantizer, never the model output.
#include <memory>
#include <string>
#include <vector>

#include "xdq/exec/executor.h"
#include <functional>

#include "xdq/quant/calibration_images.h"
#include "xdq/quant/model_view.h"
#include "xdq/quant/scheme.h"
#include "xdq/quant/statistics.h"

namespace xdq {

struct PtqSettings {
  int w_bits = 8, a_bits = 8;
  Scheme scheme;
  std::vector<LayerOverride> overrides;
  std::string weight_range = "minmax";  // or "mse", "quantile_search" (quant/quantizer.h)
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
  // activation, with histograms of `bins` bins per sign. `progress`: a bar while it lasts.
  CalibrationStatistics collect_statistics(const CalibrationImages& images, std::int64_t batch_size, int bins,
                                           std::ostream* progress = nullptr) const;
  // FP forward passes over `images` in batches; `observe(i, x)` sees every batch of activation i.
  void observe_activations(const CalibrationImages& images, std::int64_t batch_size,
                           const std::function<void(std::size_t, const at::Tensor&)>& observe,
                           std::ostream* progress = nullptr) const;
  // Activation i's range -> scale / zero point; an empty range is an error naming `source` and the value.
  void set_activation_range(std::size_t i, const Range& range, const std::string& source);
  // Weight scale/zero-point from the weight range method.
  void set_weight_ranges(const std::string& method);
  // `base` with this model's graph, layers and activations filled in, for a rounding optimizer.
  RoundingContext rounding_context(RoundingContext base);
  // After rounding: every layer holds a quantized weight of its weight's shape, else an error naming `source`.
  void check_rounded(const std::string& source) const;
  // Every weight rounded to its nearest grid point (what the `nearest` plugin does; analysis uses it).
  void round_to_nearest();
  // The folded graph, for AfterRounding passes (they may change its biases).
  Graph& graph_for_rewrite() { return graph_; }

  // Executor running the quantized model (fake-quantized weights and activations).
  Executor executor() const;

 private:
  void add_activation(int value, const std::string& name, int bits, const Scheme& scheme);

  Graph graph_;
  std::vector<QuantizedLayer> layers_;
  std::vector<ActivationQuantizer> activations_;
};

}  // namespace xdq
