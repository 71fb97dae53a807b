#pragma once
// The steps where plugins act on a quantized model: activation ranges from a Calibrator (by what its
// input() names), the rounding of weights by a WeightOptimizer, and AfterRounding graph passes. Every
// call goes through the plugin's Loaded handle, so a throwing plugin becomes an Error naming it.
#include <cstdint>
#include <functional>
#include <memory>

#include "xdq/plugin/registry.h"
#include "xdq/quant/ptq.h"

namespace xdq {

// Ranges from statistics collected on the model's graph (Calibrator::Input::Statistics).
void calibrate_from_statistics(QuantizedModel& model, const Loaded<Calibrator>& calibrator,
                               const CalibrationStatistics& statistics);
// Ranges from an observer per activation that sees every batch of `images` (Input::Activations).
void calibrate_activations(QuantizedModel& model, const Loaded<Calibrator>& calibrator, const at::Tensor& images,
                           std::int64_t batch_size);
// Ranges from the graph's BN statistics alone (Input::Graph); `input_range` is that of the model input.
void calibrate_from_graph(QuantizedModel& model, const Loaded<Calibrator>& calibrator, const Range& input_range);

// Ranges from whichever input the calibrator names: statistics() is called for Input::Statistics only (a
// cache may supply them), `images` (preprocessed) serve Input::Activations, `input_range` (the range of
// the preprocessed model input) Input::Graph.
void calibrate(QuantizedModel& model, const Loaded<Calibrator>& calibrator, const at::Tensor& images,
               std::int64_t batch_size, const Range& input_range,
               const std::function<std::shared_ptr<const CalibrationStatistics>()>& statistics);

// The optimizer fills each layer's quantized weight (it may also learn activation steps); the caller fills
// the context's calibration, seed and outputs, the model the rest.
void round_weights(QuantizedModel& model, const Loaded<WeightOptimizer>& optimizer, RoundingContext context);

// An AfterRounding pass on the model's folded graph (it may change biases).
void apply_pass(QuantizedModel& model, const Loaded<GraphPass>& pass, PassContext context);

}  // namespace xdq
