// bn_distance: how far the calibration set's BatchNorm-input statistics are from the BN running statistics
// (the data the model was trained on), the distance ZeroQ's and DeepInversion's synthesis minimize:
// mean over BN layers of ||μ_S − μ||₂ + ||σ_S − σ||₂, with μ_S, σ_S² the per-channel mean and variance of
// the layer's input over every image and position of the set. Needs no target sample.
#include <cmath>

#include "xdq/error.h"
#include "xdq/plugin/interfaces.h"

namespace {

class BnDistance : public xdq::Scorer {
 public:
  std::vector<xdq::ScoreInfo> scores() const override {
    return {{"bn_distance", false, "mean over BN layers of ||mu_S - mu_BN||_2 + ||sigma_S - sigma_BN||_2 on the calibration set"}};
  }
  xdq::FeatureRequest features() const override {
    xdq::FeatureRequest r;
    r.bn_inputs = true;
    return r;
  }
  std::vector<double> score(const xdq::ScoringInputs& in) const override {
    const auto& sites = in.calibration_features.bn_inputs;
    if (sites.empty()) throw xdq::Error("bn_distance: the model has no BatchNorm layer to compare the set with");
    double total = 0;
    for (const xdq::SiteFeatures& s : sites) {
      // Every image has the same positions, so the mean of per-image means is the pooled mean.
      const at::Tensor mean = s.mean.to(at::kDouble).mean(0), square = s.square.to(at::kDouble).mean(0);
      const at::Tensor sigma = (square - mean * mean).clamp_min(0).sqrt();
      total += (mean - s.running_mean.to(at::kDouble)).norm().item<double>() +
               (sigma - s.running_var.to(at::kDouble).clamp_min(0).sqrt()).norm().item<double>();
    }
    return {total / static_cast<double>(sites.size())};
  }
};

xdq::OptionSchema schema() { return {}; }
xdq::Plugin* create(const xdq::Options&) { return new BnDistance(); }

}  // namespace

XDQ_PLUGIN(xdq::Scorer, "bn_distance", "1.0.0", "distance of the set's BatchNorm-input statistics to the BN running statistics", schema, create)
