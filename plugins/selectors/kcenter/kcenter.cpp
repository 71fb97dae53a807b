// kcenter: the greedy k-center coreset (Gonzalez; Sener & Savarese's core-set selection) on the FP model's
// penultimate features: from a seeded first image, repeatedly the image farthest from those chosen.
// Distances in double; measures: the covering radius (the largest distance of a pool image to its
// nearest chosen one).
#include <cmath>

#include "xdq/select/selection.h"

namespace {

class KCenter : public xdq::Selector {
 public:
  xdq::Selection select(const xdq::SelectionContext& context) const override {
    xdq::FeatureRequest request;
    request.penultimate = true;
    const at::Tensor x = xdq::pool_features(context, request).penultimate.to(at::kDouble);
    xdq::Selection out;
    std::int64_t next = xdq::seeded_index(x.size(0), context.seed);
    at::Tensor nearest = at::full({x.size(0)}, std::numeric_limits<double>::infinity(), at::kDouble);
    for (std::int64_t k = 0; k < context.count; ++k) {
      out.indices.push_back(next);
      nearest = at::minimum(nearest, (x - x[next]).pow(2).sum(1));
      next = nearest.argmax().item<std::int64_t>();
    }
    out.measures["covering_radius"] = std::sqrt(nearest.max().item<double>());
    return out;
  }
};

xdq::OptionSchema schema() { return {}; }
xdq::Plugin* create(const xdq::Options&) { return new KCenter(); }

}  // namespace

XDQ_PLUGIN(xdq::Selector, "kcenter", "1.0.0", "greedy k-center coreset on the FP model's penultimate features", schema, create)
