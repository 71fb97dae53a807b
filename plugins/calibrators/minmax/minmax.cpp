// min-max: the running global minimum and maximum over all calibration batches.
#include <algorithm>

#include "xdq/plugin/interfaces.h"

namespace {

class MinMaxObserver : public xdq::RangeObserver {
 public:
  void observe(const at::Tensor& x) override {
    auto [lo, hi] = at::aminmax(x.detach());
    const double l = lo.item<double>(), h = hi.item<double>();
    range_ = seen_ ? xdq::Range{std::min(range_.min, l), std::max(range_.max, h)} : xdq::Range{l, h};
    seen_ = true;
  }
  xdq::Range range() const override { return range_; }

 private:
  bool seen_ = false;
  xdq::Range range_;
};

class MinMax : public xdq::Calibrator {
 public:
  std::unique_ptr<xdq::RangeObserver> make_observer(const xdq::QuantSpec&) const override {
    return std::make_unique<MinMaxObserver>();
  }
};

xdq::OptionSchema schema() { return {}; }
xdq::Plugin* create(const xdq::Options&) { return new MinMax(); }

}  // namespace

XDQ_PLUGIN(xdq::Calibrator, "minmax", "1.0.0", "running global min and max", schema, create)
