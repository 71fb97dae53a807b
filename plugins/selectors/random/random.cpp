// random: a uniformly random subset of the pool, seeded (the baseline every selector is compared with,
// and the draw xdq makes when no selector is named).
#include "xdq/data/dataset.h"
#include "xdq/plugin/interfaces.h"

namespace {

class Random : public xdq::Selector {
 public:
  int passes() const override { return 0; }
  xdq::Selection select(const xdq::SelectionContext& context) const override {
    const at::Tensor rows = xdq::subset_rows(context.pool.size(), context.count, context.seed);
    xdq::Selection out;
    out.indices.assign(rows.data_ptr<std::int64_t>(), rows.data_ptr<std::int64_t>() + rows.numel());
    return out;
  }
};

xdq::OptionSchema schema() { return {}; }
xdq::Plugin* create(const xdq::Options&) { return new Random(); }

}  // namespace

XDQ_PLUGIN(xdq::Selector, "random", "1.0.0", "uniformly random subset of the pool (the baseline)", schema, create)
