// Test plugin: throws from its factory when asked to, and from observe() (of every activation, or of
// those quantized to `fail_at_bits` bits: one run of a sweep fails, the others do not).
#include <stdexcept>

#include "xdq/plugin/interfaces.h"

namespace {
class ThrowingObserver : public xdq::RangeObserver {
 public:
  explicit ThrowingObserver(bool fail) : fail_(fail) {}
  void observe(const at::Tensor&) override {
    if (fail_) throw std::runtime_error("observer exploded");
  }
  xdq::Range range() const override { return {0, 1}; }

 private:
  bool fail_;
};
class Throwing : public xdq::Calibrator {
 public:
  explicit Throwing(std::int64_t fail_at_bits) : fail_at_bits_(fail_at_bits) {}
  Input input() const override { return Input::Activations; }
  std::unique_ptr<xdq::RangeObserver> make_observer(const xdq::QuantSpec& spec) const override {
    return std::make_unique<ThrowingObserver>(fail_at_bits_ == 0 || spec.bits == fail_at_bits_);
  }

 private:
  std::int64_t fail_at_bits_;
};
xdq::OptionSchema schema() {
  return {xdq::OptionSpec::flag("fail_create", false, "throw from the factory"),
          xdq::OptionSpec::integer("fail_at_bits", 0, "observe() throws for activations of these bits (0: all)").range(0, 16)};
}
xdq::Plugin* create(const xdq::Options& o) {
  if (o.flag("fail_create")) throw std::runtime_error("factory exploded");
  return new Throwing(o.integer("fail_at_bits"));
}
}  // namespace

XDQ_PLUGIN(xdq::Calibrator, "test_throws", "0.1.0", "test: throws", schema, create)
