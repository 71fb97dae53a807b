// gaussian: the noise baseline of data-free papers (ZeroQ's "Gaussian" row): images drawn from
// N(mean, std²) in the model's normalized input space, seeded, unlabeled.
#include "xdq/error.h"
#include "xdq/plugin/interfaces.h"

namespace {

class Gaussian : public xdq::Synthesizer {
 public:
  Gaussian(double mean, double std, bool clamp) : mean_(mean), std_(std), clamp_(clamp) {}

  xdq::Dataset synthesize(const xdq::SynthesisContext& context) const override {
    if (context.models.empty()) throw xdq::Error("gaussian: no model to take the input normalization from");
    const auto& s = context.input_shape;
    auto gen = at::detail::createCPUGenerator(context.seed);
    const at::Tensor z = at::randn({context.count, s.at(0), s.at(1), s.at(2)}, gen) * std_ + mean_;
    // Back to pixels through the (first) model's normalization: pixels = z·std + mean.
    const xdq::Preprocess& pre = context.models[0].preprocess;
    const at::Tensor unit = pre.apply(at::zeros({1, s.at(0), 1, 1}));      // -mean/std
    const at::Tensor scale = pre.apply(at::ones({1, s.at(0), 1, 1})) - unit;  // 1/std
    at::Tensor pixels = (z - unit) / scale;
    if (clamp_) pixels = pixels.clamp(0, 1);
    return {"gaussian", pixels.contiguous(), {}};
  }

 private:
  double mean_, std_;
  bool clamp_;
};

const xdq::Option<double> kMean =
    xdq::OptionSpec::number("mean", 0.0, "mean in the normalized input space");
const xdq::Option<double> kStd =
    xdq::OptionSpec::number("std", 1.0, "standard deviation in the normalized input space").range(0, 1e6);
const xdq::Option<bool> kClamp =
    xdq::OptionSpec::flag("clamp", false, "clip the pixels to [0, 1]");
xdq::OptionSchema schema() { return {kMean.spec(), kStd.spec(), kClamp.spec()}; }
xdq::Plugin* create(const xdq::Options& o) { return new Gaussian(kMean(o), kStd(o), kClamp(o)); }

}  // namespace

XDQ_PLUGIN(xdq::Synthesizer, "gaussian", "1.0.0", "Gaussian noise in the normalized input space", schema, create)
