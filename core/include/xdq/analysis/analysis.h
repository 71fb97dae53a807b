#pragma once
// Outlier-layer analysis of a quantized model: where the error enters, why, and which layers to keep at
// higher precision.
//   layerwise   one layer quantized at a time (its weights, the activation it reads, or both), everything
//               else FP32; error at the network output. The FP32 activations are computed once per batch
//               and each layer's run starts from them at that layer, so a layer costs at most one pass.
//   graphwise   the whole model quantized; SQNR of every layer's output against the FP32 model's.
//   weights     per-channel range spread and kurtosis after BN folding, against the unfolded weights.
//   merges      add/concat inputs with mismatched ranges, and what one shared scale would cost.
//   activations max |x| against the 99.99th percentile of |x| of each quantized activation.
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "xdq/ir/graph.h"
#include "xdq/quant/ptq.h"

namespace xdq {

// Output-level error of a quantized variant against FP32, accumulated over batches.
struct OutputError {
  double signal = 0, noise = 0, cosine_sum = 0, squared_error_sum = 0;
  std::int64_t samples = 0, elements = 0, fp_correct = 0, quant_correct = 0;

  void add(const at::Tensor& fp, const at::Tensor& quant, const at::Tensor& labels);
  double sqnr_db() const;  // 10 log10(sum fp^2 / sum (q - fp)^2)
  double cosine() const;   // mean over samples of the cosine between logit vectors
  double mse() const;
  double top1_drop() const;  // FP32 top-1 minus quantized top-1, in points
};

enum class LayerwiseMode { Weights, Activation, Both };
LayerwiseMode parse_layerwise_mode(const std::string& text);  // "weights", "activation", "both"

// One entry per quantized layer (QuantizedModel::layers() order). `model` holds rounded weights.
std::vector<OutputError> layerwise_errors(const QuantizedModel& model, LayerwiseMode mode, const at::Tensor& images,
                                          const at::Tensor& labels, std::int64_t batch_size);

// SQNR (dB) of every layer's output (QuantizedModel::layers() order), whole model quantized.
std::vector<double> graphwise_sqnr(const QuantizedModel& model, const at::Tensor& images, std::int64_t batch_size);

struct WeightStats {
  double channel_range_ratio = 0;  // max / median over output channels of (max - min) of the channel
  double kurtosis = 0;             // of all the layer's weights (3 for a Gaussian)
};
WeightStats weight_stats(const at::Tensor& weight);

struct MergeStats {
  int node = -1;
  std::string name, op;
  std::vector<std::string> inputs;
  std::vector<double> ranges;  // max - min of each input over the images
  double range_ratio = 1;      // widest / narrowest input range
  double own_sqnr_db = 0;      // worst input, quantized on its own range (a_bits, asymmetric)
  double shared_sqnr_db = 0;   // worst input, quantized on the union of the ranges
};
std::vector<MergeStats> merge_stats(const Graph& graph, const at::Tensor& images, int a_bits, std::int64_t batch_size);

// max |x| / 99.99th percentile of |x| for each activation quantizer's value (activations() order).
std::vector<double> activation_outlier_ratios(const QuantizedModel& model, const at::Tensor& images,
                                              std::int64_t batch_size);

}  // namespace xdq
