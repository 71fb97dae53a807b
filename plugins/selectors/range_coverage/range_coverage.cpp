// range_coverage: the subset that covers the per-channel activation ranges of the pool: coverage of a set
// S = mean over the quantized activations (conv/linear inputs) of mean_c min(1, max_{i∈S} |x|_ic / R_c),
// R_c the channel's largest |x| over the whole pool (or its `quantile` over the pool's images, so one
// outlier image need not be chased). Greedy on the gain (coverage is monotone submodular); once nothing
// gains, the remaining images are a seeded random draw.
#include <algorithm>

#include "xdq/select/selection.h"

namespace {

class RangeCoverage : public xdq::Selector {
 public:
  explicit RangeCoverage(double quantile) : quantile_(quantile) {}
  xdq::Selection select(const xdq::SelectionContext& context) const override {
    xdq::FeatureRequest request;
    request.layer_inputs = true;
    request.moments = false;
    request.absmax = true;
    const xdq::PoolFeatures f = xdq::pool_features(context, request);
    // Every activation weighs the same, every live channel the same within it; a channel that is zero on
    // every pool image has nothing to cover and weighs nothing.
    std::vector<at::Tensor> parts, weights;
    for (const xdq::SiteFeatures& s : f.layer_inputs) {
      const at::Tensor reach = quantile_ >= 1 ? s.absmax.amax(0) : at::quantile(s.absmax, quantile_, 0);
      const at::Tensor live = reach.gt(0);
      const double live_channels = std::max<double>(1, live.sum().item<double>());
      parts.push_back((s.absmax / reach.clamp_min(1e-30)).clamp_max(1) * live);
      weights.push_back(live.to(at::kFloat) / (live_channels * static_cast<double>(f.layer_inputs.size())));
    }
    const at::Tensor a = at::cat(parts, 1).contiguous(), w = at::cat(weights);
    xdq::Selection out;
    at::Tensor covered = at::zeros({a.size(1)}, at::kFloat), taken = at::zeros({a.size(0)}, at::kBool);
    // Lazy greedy (coverage is submodular: an image's gain only shrinks as others are taken): `bound`
    // holds each image's last computed gain, an upper bound of its gain now; the image with the largest
    // bound is re-evaluated, and taken when its gain still beats every other bound. Same picks as plain
    // greedy, far fewer gain evaluations.
    at::Tensor bound = at::mv(a, w);
    float* b = bound.data_ptr<float>();
    std::int64_t greedy = 0;
    while (static_cast<std::int64_t>(out.indices.size()) < context.count) {
      const std::int64_t j = bound.argmax().item<std::int64_t>();
      if (b[j] <= 0) break;
      b[j] = at::dot((a[j] - covered).clamp_min_(0), w).item<float>();
      const float next = bound.max().item<float>();
      if (b[j] < next) continue;  // another image may gain more now
      if (b[j] <= 0) break;       // nothing gains any more
      out.indices.push_back(j);
      taken[j] = true;
      b[j] = -1;
      covered = at::maximum(covered, a[j]);
      ++greedy;
    }
    out.measures["coverage"] = at::dot(covered, w).item<double>();
    out.measures["greedy_picks"] = static_cast<double>(greedy);
    // The rest: a seeded random order of the images not taken.
    auto gen = at::detail::createCPUGenerator(context.seed);
    const at::Tensor order = at::randperm(a.size(0), gen, at::kLong);
    const bool* is_taken = taken.data_ptr<bool>();
    for (std::int64_t k = 0; k < order.size(0) && static_cast<std::int64_t>(out.indices.size()) < context.count; ++k) {
      const std::int64_t j = order[k].item<std::int64_t>();
      if (!is_taken[j]) out.indices.push_back(j);
    }
    return out;
  }

 private:
  double quantile_;
};

const xdq::Option<double> kQuantile =
    xdq::OptionSpec::number("quantile", 1.0, "range to cover per channel: this quantile of the pool's per-image maxima (1: the largest)")
        .range(0, 1, true);
xdq::OptionSchema schema() { return {kQuantile.spec()}; }
xdq::Plugin* create(const xdq::Options& o) { return new RangeCoverage(kQuantile(o)); }

}  // namespace

XDQ_PLUGIN(xdq::Selector, "range_coverage", "1.0.0", "greedy coverage of per-channel activation ranges", schema, create)
