// EMA min-max: x_min <- (1 - c) x_min + c min(X) per batch, initialized by the first batch
// (PyTorch's MovingAverageMinMaxObserver, c = 0.01).
#include "xdq/plugin/interfaces.h"

namespace {

class EmaMinMax : public xdq::Calibrator {
 public:
  bool handles_any_grid() const override { return true; }  // the range's max sets every grid's scale
  explicit EmaMinMax(double c) : c_(c) {}
  xdq::Range range_from_statistics(const xdq::ActivationStatistics& s, const xdq::QuantSpec&) const override {
    const auto& batches = s.batches();
    if (batches.empty()) return {};
    xdq::Range r{batches.front().min, batches.front().max};
    for (std::size_t i = 1; i < batches.size(); ++i) {
      r.min = (1.0 - c_) * r.min + c_ * batches[i].min;
      r.max = (1.0 - c_) * r.max + c_ * batches[i].max;
    }
    return r;
  }

 private:
  double c_;
};

const xdq::Option<double> kAveragingConstant =
    xdq::OptionSpec::number("averaging_constant", 0.01, "weight of each new batch's min/max").range(0, 1, true);
xdq::OptionSchema schema() { return {kAveragingConstant.spec()}; }
xdq::Plugin* create(const xdq::Options& o) { return new EmaMinMax(kAveragingConstant(o)); }

}  // namespace

XDQ_PLUGIN(xdq::Calibrator, "ema_minmax", "1.0.0", "exponential moving average of batch min and max", schema, create)
