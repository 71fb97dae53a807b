// adaround (Nagel et al., "Up or Down? Adaptive Rounding for Post-Training Quantization", ICML 2020):
// each conv/linear layer alone (with its activation) learns whether every weight rounds up or down, so
// that the layer's output on the quantized model's input matches the FP output. Rectified sigmoid h(V),
// lambda 0.01, beta 20 -> 2 annealed (cosine, as AIMET) after a 20 % warm-up, batch 32, Adam 1e-3; the
// papers' 10 000 iterations are cut for a CPU (set `iters`). The engine is xdq/quant/reconstruction.h.
#include "xdq/plugin/interfaces.h"
#include "../common/reconstruction_optimizer.h"

namespace {

xdq::ReconstructionOptions defaults() {
  xdq::ReconstructionOptions d;
  d.granularity = xdq::Granularity::Layer;
  d.iters = 1000;
  d.beta.cosine = true;
  return d;
}

xdq::OptionSchema schema() { return xdq::reconstruction_schema(defaults()); }
xdq::Plugin* create(const xdq::Options& o) { return new xdq_rounding::ReconstructionOptimizer(xdq::reconstruction_options(o, "adaround")); }

}  // namespace

XDQ_PLUGIN(xdq::WeightOptimizer, "adaround", "1.0.0", "AdaRound: learned rounding, layer by layer", schema, create)
