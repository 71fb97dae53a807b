// EMA min-max: x_min <- (1 - c) x_min + c min(X) per batch, initialized by the first batch
// (PyTorch's MovingAverageMinMaxObserver, c = 0.01).
#include "xdq/plugin/interfaces.h"

namespace {

class EmaObserver : public xdq::RangeObserver {
 public:
  explicit EmaObserver(double c) : c_(c) {}
  void observe(const at::Tensor& x) override {
    auto [lo, hi] = at::aminmax(x.detach());
    const double l = lo.item<double>(), h = hi.item<double>();
    if (!seen_) {
      range_ = {l, h};
      seen_ = true;
      return;
    }
    range_.min = (1.0 - c_) * range_.min + c_ * l;
    range_.max = (1.0 - c_) * range_.max + c_ * h;
  }
  xdq::Range range() const override { return range_; }

 private:
  double c_;
  bool seen_ = false;
  xdq::Range range_;
};

class EmaMinMax : public xdq::Calibrator {
 public:
  explicit EmaMinMax(double c) : c_(c) {}
  std::unique_ptr<xdq::RangeObserver> make_observer(const xdq::QuantSpec&) const override {
    return std::make_unique<EmaObserver>(c_);
  }

 private:
  double c_;
};

xdq::OptionSchema schema() {
  return {xdq::OptionSpec::number("averaging_constant", 0.01, "weight of each new batch's min/max").range(0, 1, true)};
}
xdq::Plugin* create(const xdq::Options& o) { return new EmaMinMax(o.number("averaging_constant")); }

}  // namespace

XDQ_PLUGIN(xdq::Calibrator, "ema_minmax", "1.0.0", "exponential moving average of batch min and max", schema, create)
