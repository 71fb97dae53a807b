// nearest: round every weight to its nearest grid point (round half to even), with the weight
// quantizer's scale and zero point. The baseline every rounding optimizer is compared against.
#include "xdq/plugin/interfaces.h"

namespace {

class Nearest : public xdq::WeightOptimizer {
 public:
  void optimize(xdq::RoundingContext& context) const override {
    for (auto& layer : *context.layers)
      layer.quantized_weight = xdq::fake_quantize(context.graph->nodes.at(layer.node).weight, layer.qparams);
  }
};

xdq::OptionSchema schema() { return {}; }
xdq::Plugin* create(const xdq::Options&) { return new Nearest(); }

}  // namespace

XDQ_PLUGIN(xdq::WeightOptimizer, "nearest", "1.0.0", "round to nearest", schema, create)
