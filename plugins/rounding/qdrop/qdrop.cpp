// qdrop (Wei et al., "QDrop: Randomly Dropping Quantization for Extremely Low-bit Post-Training
// Quantization", ICLR 2022; wimh966/QDrop): BRECQ's block reconstruction with activation quantization on,
// where each activation element (at the block input and at every quantizer inside) is quantized only with
// probability 1 - p (p = 0.5) while learning; rounding and activation steps (LSQ, Adam 4e-5 cosine) are
// learned jointly. Iterations are cut for a CPU from the paper's 20 000: set `iters`.
#include "xdq/plugin/interfaces.h"
#include "../common/reconstruction_optimizer.h"

namespace {

xdq::ReconstructionOptions defaults() {
  xdq::ReconstructionOptions d;
  d.granularity = xdq::Granularity::Block;
  d.iters = 1000;
  d.act_quant = true;
  d.drop_prob = 0.5;
  d.act_steps = "joint";
  return d;
}

xdq::OptionSchema schema() { return xdq::reconstruction_schema(defaults()); }
xdq::Plugin* create(const xdq::Options& o) { return new xdq_rounding::ReconstructionOptimizer(xdq::reconstruction_options(o, "qdrop")); }

}  // namespace

XDQ_PLUGIN(xdq::WeightOptimizer, "qdrop", "1.0.0", "QDrop: block reconstruction with randomly dropped activation quantization",
           schema, create)
