// class_balanced: the same number of images for every class the FP model predicts (labels are never
// read). A class with fewer predicted images than its share gives all of them and the rest is shared among
// the others (max-min fair); within a class the images are a seeded random draw.
#include <algorithm>
#include <numeric>

#include "xdq/select/selection.h"

namespace {

class ClassBalanced : public xdq::Selector {
 public:
  xdq::Selection select(const xdq::SelectionContext& context) const override {
    xdq::FeatureRequest request;
    request.logits = true;
    const at::Tensor predicted = xdq::pool_features(context, request).logits.argmax(1);
    const std::int64_t classes = predicted.max().item<std::int64_t>() + 1;
    // Rows of each class in one seeded random order of the pool.
    auto gen = at::detail::createCPUGenerator(context.seed);
    const at::Tensor order = at::randperm(context.pool.size(), gen, at::kLong);
    std::vector<std::vector<std::int64_t>> rows(static_cast<std::size_t>(classes));
    const auto* o = order.data_ptr<std::int64_t>();
    const auto* p = predicted.data_ptr<std::int64_t>();
    for (std::int64_t k = 0; k < context.pool.size(); ++k) rows[static_cast<std::size_t>(p[o[k]])].push_back(o[k]);
    const std::vector<std::int64_t> quota = fair_shares(rows, context.count, context.seed);
    xdq::Selection out;
    for (std::size_t c = 0; c < rows.size(); ++c)
      out.indices.insert(out.indices.end(), rows[c].begin(), rows[c].begin() + quota[c]);
    out.measures["classes"] = static_cast<double>(std::count_if(quota.begin(), quota.end(), [](std::int64_t q) { return q > 0; }));
    return out;
  }

 private:
  // Water-filling: every class not yet exhausted gets an equal share of what remains; the remainder of
  // an uneven division goes to classes in a seeded order.
  static std::vector<std::int64_t> fair_shares(const std::vector<std::vector<std::int64_t>>& rows, std::int64_t count,
                                               std::uint64_t seed) {
    std::vector<std::int64_t> quota(rows.size(), 0);
    std::vector<std::size_t> open;
    for (std::size_t c = 0; c < rows.size(); ++c)
      if (!rows[c].empty()) open.push_back(c);
    auto gen = at::detail::createCPUGenerator(seed + 1);
    const at::Tensor tie_order = at::randperm(static_cast<std::int64_t>(rows.size()), gen, at::kLong);
    std::vector<std::int64_t> rank(rows.size());
    const auto* order = tie_order.data_ptr<std::int64_t>();
    for (std::size_t k = 0; k < rows.size(); ++k) rank[static_cast<std::size_t>(order[k])] = static_cast<std::int64_t>(k);
    std::sort(open.begin(), open.end(), [&](std::size_t a, std::size_t b) { return rank[a] < rank[b]; });
    std::int64_t remaining = count;
    while (remaining > 0 && !open.empty()) {
      const std::int64_t share = remaining / static_cast<std::int64_t>(open.size());
      std::int64_t extra = remaining % static_cast<std::int64_t>(open.size());
      std::vector<std::size_t> still_open;
      for (std::size_t c : open) {
        const std::int64_t want = share + (extra > 0 ? 1 : 0), room = static_cast<std::int64_t>(rows[c].size()) - quota[c];
        if (extra > 0) --extra;
        const std::int64_t take = std::min(want, room);
        quota[c] += take;
        remaining -= take;
        if (take < room) still_open.push_back(c);
      }
      open = std::move(still_open);
    }
    return quota;
  }
};

xdq::OptionSchema schema() { return {}; }
xdq::Plugin* create(const xdq::Options&) { return new ClassBalanced(); }

}  // namespace

XDQ_PLUGIN(xdq::Selector, "class_balanced", "1.0.0", "equal numbers per class the FP model predicts (max-min fair)", schema, create)
