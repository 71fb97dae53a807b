// min-max: the global minimum and maximum over all calibration batches.
#include "xdq/plugin/interfaces.h"

namespace {

class MinMax : public xdq::Calibrator {
 public:
  bool handles_any_grid() const override { return true; }  // the range's max sets every grid's scale
  xdq::Range range_from_statistics(const xdq::ActivationStatistics& s, const xdq::QuantSpec&) const override {
    return {s.histogram().min(), s.histogram().max()};
  }
};

xdq::OptionSchema schema() { return {}; }
xdq::Plugin* create(const xdq::Options&) { return new MinMax(); }

}  // namespace

XDQ_PLUGIN(xdq::Calibrator, "minmax", "1.0.0", "global min and max", schema, create)
