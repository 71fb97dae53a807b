// Out-of-tree test plugin: range [min/2, max/2] over all batches.
#include <algorithm>

#include "xdq/plugin/interfaces.h"

namespace {
class HalfMaxObserver : public xdq::RangeObserver {
 public:
  void observe(const at::Tensor& x) override {
    lo_ = std::min(lo_, x.min().item<double>());
    hi_ = std::max(hi_, x.max().item<double>());
  }
  xdq::Range range() const override { return {lo_ / 2, hi_ / 2}; }

 private:
  double lo_ = 0, hi_ = 0;
};
class HalfMax : public xdq::Calibrator {
 public:
  std::unique_ptr<xdq::RangeObserver> make_observer(const xdq::QuantSpec&) const override {
    return std::make_unique<HalfMaxObserver>();
  }
};
xdq::OptionSchema schema() { return {}; }
xdq::Plugin* create(const xdq::Options&) { return new HalfMax(); }
}  // namespace

XDQ_PLUGIN(xdq::Calibrator, "oot_halfmax", "0.1.0", "out-of-tree test plugin", schema, create)
