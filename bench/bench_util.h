#pragma once
// What the benchmarks share: timing, medians, and the reconstruction iteration of one block against a
// plain ATen forward + backward of the same block.
#include <algorithm>
#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "xdq/quant/ptq.h"
#include "xdq/quant/reconstruction.h"

namespace xdq::bench {

inline double seconds(const std::function<void()>& f) {
  const auto t = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// A basic residual block (conv, relu, conv, add, relu) with the weights of `unit`'s two convs, written
// directly in ATen, forward and backward of an MSE loss on a batch of `batch` inputs of side `side`.
class PlainBlock {
 public:
  PlainBlock(const Graph& folded, const ReconstructionUnit& unit, std::int64_t batch, std::int64_t side)
      : w1_(folded.nodes[unit.layers[0]].weight.clone().requires_grad_(true)),
        w2_(folded.nodes[unit.layers[1]].weight.clone().requires_grad_(true)),
        b1_(folded.nodes[unit.layers[0]].bias),
        b2_(folded.nodes[unit.layers[1]].bias),
        in_(at::rand({batch, w1_.size(1), side, side})),
        target_(at::rand({batch, w2_.size(0), side, side})) {}
  void step() const {
    at::AutoGradMode grad(true);
    const at::Tensor h = at::relu(at::conv2d(in_, w1_, b1_, 1, 1));
    const at::Tensor out = at::relu(at::conv2d(h, w2_, b2_, 1, 1) + in_);
    ((out - target_).pow(2).sum(1).mean()).backward();
  }

 private:
  at::Tensor w1_, w2_, b1_, b2_, in_, target_;
};

// The reconstruction engine's own timing of its loop (seconds per iteration) on unit `name`, with
// `iters` iterations per unit over `calibration` (preprocessed), from `model`'s weight ranges.
inline double reconstruction_iteration_seconds(const QuantizedModel& model, const at::Tensor& calibration,
                                               const std::string& name, std::int64_t iters) {
  QuantizedModel q = model;
  ReconstructionOptions o;
  o.iters = iters;
  RoundingContext ctx;
  ctx.graph = &q.graph();
  ctx.layers = &q.layers();
  ctx.calibration = calibration;
  at::AutoGradMode grad(true);
  for (const UnitReport& r : reconstruct(ctx, o))
    if (r.name == name) return r.timing.seconds_per_iteration;
  return 0.0;
}

}  // namespace xdq::bench
