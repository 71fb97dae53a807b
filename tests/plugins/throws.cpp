// Test plugin: throws from its factory when asked to, and from every observe().
#include <stdexcept>

#include "xdq/plugin/interfaces.h"

namespace {
class ThrowingObserver : public xdq::RangeObserver {
 public:
  void observe(const at::Tensor&) override { throw std::runtime_error("observer exploded"); }
  xdq::Range range() const override { return {0, 1}; }
};
class Throwing : public xdq::Calibrator {
 public:
  Input input() const override { return Input::Activations; }
  std::unique_ptr<xdq::RangeObserver> make_observer(const xdq::QuantSpec&) const override {
    return std::make_unique<ThrowingObserver>();
  }
};
xdq::OptionSchema schema() { return {xdq::OptionSpec::flag("fail_create", false, "throw from the factory")}; }
xdq::Plugin* create(const xdq::Options& o) {
  if (o.flag("fail_create")) throw std::runtime_error("factory exploded");
  return new Throwing();
}
}  // namespace

XDQ_PLUGIN(xdq::Calibrator, "test_throws", "0.1.0", "test: throws", schema, create)
