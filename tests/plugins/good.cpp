// Test plugin: a well-formed calibrator whose range is a fixed option, to check loading and options.
#include "xdq/plugin/interfaces.h"

namespace {
class FixedObserver : public xdq::RangeObserver {
 public:
  explicit FixedObserver(double v) : v_(v) {}
  void observe(const at::Tensor&) override { ++batches_; }
  xdq::Range range() const override { return {-v_, v_ * batches_}; }

 private:
  double v_;
  int batches_ = 0;
};
class Fixed : public xdq::Calibrator {
 public:
  explicit Fixed(double v) : v_(v) {}
  Input input() const override { return Input::Activations; }  // counts raw batches
  std::unique_ptr<xdq::RangeObserver> make_observer(const xdq::QuantSpec&) const override {
    return std::make_unique<FixedObserver>(v_);
  }

 private:
  double v_;
};
const xdq::Option<double> kValue = xdq::OptionSpec::number("value", 1.5, "range half-width").range(0, 100, true);
xdq::OptionSchema schema() { return {kValue.spec()}; }
xdq::Plugin* create(const xdq::Options& o) { return new Fixed(kValue(o)); }
}  // namespace

XDQ_PLUGIN(xdq::Calibrator, "test_fixed", "0.1.0", "test: fixed range", schema, create)
