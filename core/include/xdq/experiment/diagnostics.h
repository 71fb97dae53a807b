#pragma once
// Per-layer shift diagnostics: with activation ranges calibrated on domain A, how much of each quantized
// activation falls outside its range on domain B (clipped fraction), and how far the activation
// distribution on B is from the one on A (total-variation distance of 256-bin histograms over A's range
// widened by its width on both sides, outer bins catching the rest).
#include <string>
#include <utility>
#include <vector>

#include "xdq/quant/ptq.h"

namespace xdq {

struct LayerShift {
  std::string layer;   // activation quantizer, e.g. "layer1.block0.conv1:input"
  std::string domain;  // B
  double clipped_fraction = 0.0;
  double tv_distance = 0.0;
};

// `calibrated` holds ranges from A; `reference` are (preprocessed) images of A, `tests` (name, images) of B.
std::vector<LayerShift> measure_layer_shift(const QuantizedModel& calibrated, const at::Tensor& reference,
                                            const std::vector<std::pair<std::string, at::Tensor>>& tests,
                                            std::int64_t batch_size);

// Per activation quantizer of `calibrated` (in model order): its name and the share of its FP values on
// `images` (preprocessed) that fall outside its range.
std::vector<std::pair<std::string, double>> clipped_fractions(const QuantizedModel& calibrated, const at::Tensor& images,
                                                              std::int64_t batch_size);

}  // namespace xdq
