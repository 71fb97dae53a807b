// set_quality: what the calibration set itself looks like to the FP model, and how it covers the target:
//   covering_radius     the largest distance from a target image to its nearest set image in penultimate
//                       feature space (the k-center objective, with the target as what must be covered);
//   entropy             mean entropy (nats) of the FP model's softmax on the set's images;
//   energy              mean energy score −logsumexp(logits) on the set (low: in-distribution, Liu et al. 2020);
//   high_frequency_gap  |h_S − h_T|, h the mean over images of the share of spectral power (per-channel
//                       mean removed, |FFT|² summed over channels) above half the Nyquist frequency,
//                       i.e. at radial frequency over 0.25 cycles per pixel.
#include <cmath>

#include "xdq/error.h"
#include "xdq/plugin/interfaces.h"

namespace {

// Per image, the share of spectral power at radial frequency above 0.25 cycles per pixel. [B] double.
at::Tensor high_frequency_share(const at::Tensor& images) {
  const at::Tensor x = images.to(at::kDouble);
  const at::Tensor centered = x - x.mean({2, 3}, true);
  const at::Tensor power = at::fft_fft2(centered).abs().pow(2).sum(1);  // [B, H, W]
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  const at::Tensor fy = at::fft_fftfreq(x.size(2), 1.0, opts).unsqueeze(1), fx = at::fft_fftfreq(x.size(3), 1.0, opts).unsqueeze(0);
  const at::Tensor high = (fy * fy + fx * fx).sqrt().gt(0.25).to(at::kDouble);
  const at::Tensor total = power.sum({1, 2});
  return ((power * high).sum({1, 2}) / total.clamp_min(1e-300)).masked_fill(total.eq(0), 0.0);  // flat image: no high frequency
}

class SetQuality : public xdq::Scorer {
 public:
  std::vector<xdq::ScoreInfo> scores() const override {
    return {{"covering_radius", false, "largest penultimate-feature distance from a target image to its nearest set image"},
            {"entropy", false, "mean softmax entropy of the FP model on the set"},
            {"energy", false, "mean energy score -logsumexp(logits) of the FP model on the set"},
            {"high_frequency_gap", false, "|share of spectral power above 0.25 cycles/pixel, set - target|"}};
  }
  xdq::FeatureRequest features() const override {
    xdq::FeatureRequest r;
    r.logits = true;
    r.penultimate = true;
    return r;
  }
  std::vector<double> score(const xdq::ScoringInputs& in) const override {
    const at::Tensor s = in.calibration_features.penultimate.to(at::kDouble), t = in.target_features.penultimate.to(at::kDouble);
    if (s.size(0) == 0 || t.size(0) == 0) throw xdq::Error("set_quality: needs images in both the set and the target sample");
    const double radius = at::cdist(t, s).amin(1).max().item<double>();
    const at::Tensor logits = in.calibration_features.logits.to(at::kDouble);
    const at::Tensor log_p = at::log_softmax(logits, 1);
    const double entropy = -(log_p.exp() * log_p).sum(1).mean().item<double>();
    const double energy = -at::logsumexp(logits, {1}).mean().item<double>();
    double set_share = 0;
    in.calibration.for_each_batch(256, [&](const at::Tensor& images, std::int64_t) {
      set_share += high_frequency_share(images).sum().item<double>();
    });
    set_share /= static_cast<double>(in.calibration.size());
    const double target_share = high_frequency_share(in.target).mean().item<double>();
    return {radius, entropy, energy, std::abs(set_share - target_share)};
  }
};

xdq::OptionSchema schema() { return {}; }
xdq::Plugin* create(const xdq::Options&) { return new SetQuality(); }

}  // namespace

XDQ_PLUGIN(xdq::Scorer, "set_quality", "1.0.0", "covering radius of the target, entropy and energy on the set, high-frequency gap", schema, create)
