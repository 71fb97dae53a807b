// Test plugin: throws from its factory when asked to, and from observe() (of every activation, or of
// those quantized to `fail_at_bits` bits: one run of a sweep fails, the others do not); or ends the
// whole process with SIGSEGV when it observes a batch of `crash_on_batch` images (a crashing plugin).
#include <csignal>
#include <stdexcept>

#include "xdq/plugin/interfaces.h"

namespace {
class ThrowingObserver : public xdq::RangeObserver {
 public:
  ThrowingObserver(bool fail, std::int64_t crash_on_batch) : fail_(fail), crash_on_batch_(crash_on_batch) {}
  void observe(const at::Tensor& x) override {
    if (crash_on_batch_ > 0 && x.size(0) == crash_on_batch_) std::raise(SIGSEGV);
    if (fail_) throw std::runtime_error("observer exploded");
  }
  xdq::Range range() const override { return {0, 1}; }

 private:
  bool fail_;
  std::int64_t crash_on_batch_;
};
class Throwing : public xdq::Calibrator {
 public:
  Throwing(std::int64_t fail_at_bits, std::int64_t crash_on_batch) : fail_at_bits_(fail_at_bits), crash_on_batch_(crash_on_batch) {}
  Input input() const override { return Input::Activations; }
  std::unique_ptr<xdq::RangeObserver> make_observer(const xdq::QuantSpec& spec) const override {
    if (crash_on_batch_ > 0) return std::make_unique<ThrowingObserver>(false, crash_on_batch_);
    return std::make_unique<ThrowingObserver>(fail_at_bits_ == 0 || spec.bits == fail_at_bits_, 0);
  }

 private:
  std::int64_t fail_at_bits_, crash_on_batch_;
};
const xdq::Option<bool> kFailCreate =
    xdq::OptionSpec::flag("fail_create", false, "throw from the factory");
const xdq::Option<std::int64_t> kFailAtBits =
    xdq::OptionSpec::integer("fail_at_bits", 0, "observe() throws for activations of these bits (0: all)").range(0, 16);
const xdq::Option<std::int64_t> kCrashOnBatch =
    xdq::OptionSpec::integer("crash_on_batch", 0, "observe() raises SIGSEGV on a batch of this many images (0: never)").range(0, 1 << 20);
xdq::OptionSchema schema() { return {kFailCreate.spec(), kFailAtBits.spec(), kCrashOnBatch.spec()}; }
xdq::Plugin* create(const xdq::Options& o) {
  if (kFailCreate(o)) throw std::runtime_error("factory exploded");
  return new Throwing(kFailAtBits(o), kCrashOnBatch(o));
}
}  // namespace

XDQ_PLUGIN(xdq::Calibrator, "test_throws", "0.1.0", "test: throws", schema, create)
