// Out-of-tree test plugin: range [min/2, max/2] over all batches.
#include "xdq/plugin/interfaces.h"

namespace {
class HalfMax : public xdq::Calibrator {
 public:
  xdq::Range range_from_statistics(const xdq::ActivationStatistics& s, const xdq::QuantSpec&) const override {
    return {s.histogram().min() / 2, s.histogram().max() / 2};
  }
};
xdq::OptionSchema schema() { return {}; }
xdq::Plugin* create(const xdq::Options&) { return new HalfMax(); }
}  // namespace

XDQ_PLUGIN(xdq::Calibrator, "oot_halfmax", "0.1.0", "out-of-tree test plugin", schema, create)
