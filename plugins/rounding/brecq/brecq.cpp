// brecq (Li et al., "BRECQ: Pushing the Limit of Post-Training Quantization by Block Reconstruction",
// ICLR 2021; yhhhli/BRECQ): AdaRound's learned rounding optimized a block at a time (residual blocks with
// their shortcut convs, inverted residuals, concat units; lone layers alone), block input from the
// quantized model, target from the FP model, MSE or Fisher-diagonal weighted loss, beta 20 -> 2 linear
// after a 20 % warm-up, lambda 0.01 (0.1 for MobileNetV2), Adam 1e-3, batch 32. Then, weights fixed, the
// activation steps of each block are learned (Adam 4e-4, cosine). Iterations are cut for a CPU from the
// paper's 20 000 (weights) and 5 000 (steps): set `iters` and `act_iters`.
#include "xdq/plugin/interfaces.h"
#include "../common/reconstruction_optimizer.h"

namespace {

xdq::ReconstructionOptions defaults() {
  xdq::ReconstructionOptions d;
  d.granularity = xdq::Granularity::Block;
  d.iters = 1000;
  d.act_steps = "after";
  d.act_iters = 200;
  d.lsq_grad_scale = false;  // BRECQ learns the step with its plain gradient
  return d;
}

xdq::OptionSchema schema() { return xdq::reconstruction_schema(defaults()); }
xdq::Plugin* create(const xdq::Options& o) { return new xdq_rounding::ReconstructionOptimizer(xdq::reconstruction_options(o, "brecq")); }

}  // namespace

XDQ_PLUGIN(xdq::WeightOptimizer, "brecq", "1.0.0", "BRECQ: block reconstruction of the rounding", schema, create)
