// Example plugin, the template for writing your own (README: "Write your own plugin").
// absmax: a symmetric range [-m, m] with m = margin * max|x| over all calibration batches.
#include <algorithm>

#include "xdq/plugin/interfaces.h"

namespace {

// 1. The per-activation state: sees every calibration batch of one tensor, then returns a range.
class AbsMaxObserver : public xdq::RangeObserver {
 public:
  explicit AbsMaxObserver(double margin) : margin_(margin) {}
  void observe(const at::Tensor& x) override { amax_ = std::max(amax_, x.detach().abs().max().item<double>()); }
  xdq::Range range() const override { return {-margin_ * amax_, margin_ * amax_}; }

 private:
  double margin_;
  double amax_ = 0.0;
};

// 2. The plugin object: made once per run from the validated options; makes one observer per activation.
class AbsMax : public xdq::Calibrator {
 public:
  explicit AbsMax(double margin) : margin_(margin) {}
  std::unique_ptr<xdq::RangeObserver> make_observer(const xdq::QuantSpec&) const override {
    return std::make_unique<AbsMaxObserver>(margin_);
  }

 private:
  double margin_;
};

// 3. The option schema (the core validates configs against it) and the factory.
xdq::OptionSchema schema() {
  return {xdq::OptionSpec::number("margin", 1.0, "multiplier on max|x|").range(0, 10, true)};
}
xdq::Plugin* create(const xdq::Options& options) { return new AbsMax(options.number("margin")); }

}  // namespace

// 4. The entry symbol: kind, name, version, one-line summary, schema, factory.
XDQ_PLUGIN(xdq::Calibrator, "absmax", "1.0.0", "symmetric max|x| range with a margin (example plugin)", schema, create)
