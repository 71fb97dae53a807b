// bn_match: the subset whose pooled BatchNorm-input moments match the BN running statistics, i.e. the
// statistics of the data the model was trained on (the objective ZeroQ and DeepInversion optimize images
// for, here minimized over real images): greedy forward selection from a seeded first image, then rounds
// of single swaps. Objective: Σ_BN mean_c[((E_S[x] − μ)/σ)² + ((E_S[x²] − μ² − σ²)/σ²)²].
#include "xdq/error.h"
#include "xdq/select/selection.h"

namespace {

class BnMatch : public xdq::Selector {
 public:
  explicit BnMatch(int rounds) : rounds_(rounds) {}
  xdq::Selection select(const xdq::SelectionContext& context) const override {
    xdq::FeatureRequest request;
    request.bn_inputs = true;
    const xdq::PoolFeatures f = xdq::pool_features(context, request);
    if (f.bn_inputs.empty())
      throw xdq::Error("bn_match: the model has no BatchNorm layer (target_match or range_coverage need none)");
    std::vector<at::Tensor> mean, var;
    for (const xdq::SiteFeatures& s : f.bn_inputs) {
      mean.push_back(s.running_mean);
      var.push_back(s.running_var);
    }
    return xdq::select_by_moments(xdq::standardized_moment_gaps(f.bn_inputs, mean, var), context, rounds_);
  }

 private:
  int rounds_;
};

const xdq::Option<std::int64_t> kSwapRounds =
    xdq::OptionSpec::integer("swap_rounds", 2, "rounds of single swaps after the greedy pass (0: greedy only)").range(0, 1000);
xdq::OptionSchema schema() { return {kSwapRounds.spec()}; }
xdq::Plugin* create(const xdq::Options& o) { return new BnMatch(static_cast<int>(kSwapRounds(o))); }

}  // namespace

XDQ_PLUGIN(xdq::Selector, "bn_match", "1.0.0", "subset whose BatchNorm-input moments match the BN running statistics", schema, create)
