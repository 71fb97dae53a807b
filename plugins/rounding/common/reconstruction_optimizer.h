#pragma once
// The WeightOptimizer that the adaround, brecq and qdrop plugins create: the core's reconstruction engine
// (xdq/quant/reconstruction.h) run with each plugin's options.
#include "xdq/plugin/interfaces.h"
#include "xdq/quant/reconstruction.h"

namespace xdq_rounding {

class ReconstructionOptimizer : public xdq::WeightOptimizer {
 public:
  explicit ReconstructionOptimizer(xdq::ReconstructionOptions options) : options_(std::move(options)) {}
  void optimize(xdq::RoundingContext& context) const override { xdq::reconstruct(context, options_); }

 private:
  xdq::ReconstructionOptions options_;
};

}  // namespace xdq_rounding
