// Example plugin, the template for writing your own (README: "Write your own plugin").
// absmax: a symmetric range [-m, m] with m = margin * max|x| over all calibration batches.
#include <algorithm>

#include "xdq/plugin/interfaces.h"

namespace {

// 1. The plugin object: made once per run from the validated options. It reads the statistics the core
//    collected for one activation (histogram with exact extremes, per-batch summaries) and gives a range.
//    Devices: statistics live on the CPU whatever the experiment's `device`. A plugin that sees tensors
//    (observers of raw activations, passes, rounding optimizers, synthesizers) gets them where the model
//    runs (its context's `device`): compute with ATen ops on the tensor's own device, create new tensors
//    with `x.options()`, and call .cpu() only before reading a tensor's memory.
class AbsMax : public xdq::Calibrator {
 public:
  explicit AbsMax(double margin) : margin_(margin) {}
  xdq::Range range_from_statistics(const xdq::ActivationStatistics& s, const xdq::QuantSpec&) const override {
    const double amax = std::max(-s.histogram().min(), s.histogram().max());
    return {-margin_ * amax, margin_ * amax};
  }

 private:
  double margin_;
};

// 2. Each option declared once (name, default, range, doc): the schema (the core validates configs
// against it) lists it, the factory reads it through it.
const xdq::Option<double> kMargin = xdq::OptionSpec::number("margin", 1.0, "multiplier on max|x|").range(0, 10, true);
xdq::OptionSchema schema() { return {kMargin.spec()}; }
xdq::Plugin* create(const xdq::Options& options) { return new AbsMax(kMargin(options)); }

}  // namespace

// 3. The entry symbol: kind, name, version, one-line summary, schema, factory.
XDQ_PLUGIN(xdq::Calibrator, "absmax", "1.0.0", "symmetric max|x| range with a margin (example plugin)", schema, create)
