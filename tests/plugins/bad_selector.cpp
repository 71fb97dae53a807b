// Test plugin: a selector whose answer the core must refuse (a row chosen twice, or one outside the pool).
#include "xdq/plugin/interfaces.h"

namespace {
class Bad : public xdq::Selector {
 public:
  explicit Bad(bool outside) : outside_(outside) {}
  int passes() const override { return 0; }
  xdq::Selection select(const xdq::SelectionContext& context) const override {
    xdq::Selection out;
    for (std::int64_t k = 0; k < context.count; ++k) out.indices.push_back(outside_ ? context.pool.size() + k : k / 2);
    return out;
  }

 private:
  bool outside_;
};
const xdq::Option<bool> kOutside = xdq::OptionSpec::flag("outside", false, "choose rows past the pool's end");
xdq::OptionSchema schema() { return {kOutside.spec()}; }
xdq::Plugin* create(const xdq::Options& o) { return new Bad(kOutside(o)); }
}  // namespace

XDQ_PLUGIN(xdq::Selector, "test_bad_selector", "0.1.0", "test: chooses rows twice or outside the pool", schema, create)
