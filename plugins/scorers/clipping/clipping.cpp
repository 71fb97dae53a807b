// clipping: range coverage of the target without labels. The run's activation ranges, calibrated on the
// set, are laid over the FP activations of the target sample: the share of each quantized activation's
// values that fall outside its range (what the quantizer would clip). Scores: the mean over activation
// quantizers, the worst one, and the model input's (the first quantizer).
#include <algorithm>

#include "xdq/error.h"
#include "xdq/plugin/interfaces.h"

namespace {

class Clipping : public xdq::Scorer {
 public:
  std::vector<xdq::ScoreInfo> scores() const override {
    return {{"clipped_mean", false, "mean over activation quantizers of the target's share of values outside the run's range"},
            {"clipped_worst", false, "the largest such share over activation quantizers"},
            {"clipped_input", false, "the share for the first activation quantizer (the model input)"}};
  }
  bool reads_quantized_model() const override { return true; }
  std::vector<double> score(const xdq::ScoringInputs& in) const override {
    if (in.target_clipped.empty()) throw xdq::Error("clipping: the quantized model has no activation quantizer");
    double sum = 0, worst = 0;
    for (const auto& [name, share] : in.target_clipped) {
      sum += share;
      worst = std::max(worst, share);
    }
    return {sum / static_cast<double>(in.target_clipped.size()), worst, in.target_clipped.front().second};
  }
};

xdq::OptionSchema schema() { return {}; }
xdq::Plugin* create(const xdq::Options&) { return new Clipping(); }

}  // namespace

XDQ_PLUGIN(xdq::Scorer, "clipping", "1.0.0", "share of the target's activations outside the run's calibrated ranges", schema, create)
