// nearest: round every weight to its nearest grid point (round half to even), with the weight
// quantizer's scale and zero point. The baseline every rounding optimizer is compared against. With
// init_images > 0 the activation ranges are then re-initialised as the BRECQ / QDrop reference code does
// for its baseline (Lp search on the first calibration images through the quantized model).
#include "xdq/plugin/interfaces.h"
#include "xdq/quant/reconstruction.h"

namespace {

class Nearest : public xdq::WeightOptimizer {
 public:
  Nearest(std::int64_t init_images, double p) : init_images_(init_images), p_(p) {}
  void optimize(xdq::RoundingContext& context) const override {
    for (auto& layer : *context.layers)
      layer.quantized_weight = xdq::fake_quantize(context.graph->nodes.at(layer.node).weight, layer.qparams);
    if (init_images_ > 0 && context.activations) xdq::initialize_activation_ranges(context, init_images_, p_);
  }

 private:
  std::int64_t init_images_;
  double p_;
};

const xdq::Option<std::int64_t> kInitImages =
    xdq::OptionSpec::integer("init_images", 0,
        "re-initialise activation ranges on this many calibration images through the rounded "
        "model, Lp search (BRECQ/QDrop code: 64); 0 keeps the calibrator's ranges")
        .range(0, 1 << 20);
const xdq::Option<double> kP =
    xdq::OptionSpec::number("p", 2, "exponent of the init_images search (BRECQ: 2.4)").range(1, 10);
xdq::OptionSchema schema() { return {kInitImages.spec(), kP.spec()}; }
xdq::Plugin* create(const xdq::Options& o) { return new Nearest(kInitImages(o), kP(o)); }

}  // namespace

XDQ_PLUGIN(xdq::WeightOptimizer, "nearest", "1.0.0", "round to nearest", schema, create)
