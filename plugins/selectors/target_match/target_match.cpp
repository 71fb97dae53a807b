// target_match: for cross-domain calibration, the pool subset whose activation moments match those of a
// small unlabeled sample of the target domain, at every activation calibration quantizes (the inputs of
// the conv/linear layers): the bn_match search with the target sample's per-channel mean and variance as
// the reference instead of the BN running statistics.
#include "xdq/error.h"
#include "xdq/select/selection.h"

namespace {

class TargetMatch : public xdq::Selector {
 public:
  explicit TargetMatch(int rounds) : rounds_(rounds) {}
  bool needs_target() const override { return true; }
  xdq::Selection select(const xdq::SelectionContext& context) const override {
    if (!context.target.defined() || context.target.size(0) == 0)
      throw xdq::Error("target_match: no target sample (calibration.target_sample)");
    xdq::FeatureRequest request;
    request.layer_inputs = true;
    std::vector<at::Tensor> mean, var;
    xdq::sample_moments(xdq::image_features(context, context.target, request).layer_inputs, mean, var);
    const xdq::PoolFeatures pool = xdq::pool_features(context, request);
    return xdq::select_by_moments(xdq::standardized_moment_gaps(pool.layer_inputs, mean, var), context, rounds_);
  }

 private:
  int rounds_;
};

const xdq::Option<std::int64_t> kSwapRounds =
    xdq::OptionSpec::integer("swap_rounds", 2, "rounds of single swaps after the greedy pass (0: greedy only)").range(0, 1000);
xdq::OptionSchema schema() { return {kSwapRounds.spec()}; }
xdq::Plugin* create(const xdq::Options& o) { return new TargetMatch(static_cast<int>(kSwapRounds(o))); }

}  // namespace

XDQ_PLUGIN(xdq::Selector, "target_match", "1.0.0", "subset whose activation moments match a target-domain sample's", schema, create)
