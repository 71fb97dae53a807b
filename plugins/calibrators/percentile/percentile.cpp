// percentile: from the |x| histogram, amax = right edge of the bin where the cumulative count reaches p%
// (99.99 by default), so at least p% of the values lie within [-amax, amax].
#include <algorithm>

#include "xdq/plugin/interfaces.h"

namespace {

class Percentile : public xdq::Calibrator {
 public:
  bool handles_any_grid() const override { return true; }  // the range's max sets every grid's scale
  explicit Percentile(double p) : p_(p) {}
  xdq::Range range_from_statistics(const xdq::ActivationStatistics& s, const xdq::QuantSpec&) const override {
    const xdq::Histogram& hist = s.histogram();
    const auto mag = hist.magnitude();
    double total = 0;
    for (double c : mag) total += c;
    const double target = p_ / 100.0 * total;
    double cumulative = 0;
    std::size_t bin = 0;
    for (; bin + 1 < mag.size(); ++bin) {
      cumulative += mag[bin];
      if (cumulative >= target) break;
    }
    const double amax = static_cast<double>(bin + 1) * hist.width();
    return {std::max(hist.min(), -amax), std::min(hist.max(), amax)};
  }

 private:
  double p_;
};

const xdq::Option<double> kPercentile =
    xdq::OptionSpec::number("percentile", 99.99, "share of |x| kept inside the range, in percent").range(0, 100, true);
xdq::OptionSchema schema() { return {kPercentile.spec()}; }
xdq::Plugin* create(const xdq::Options& o) { return new Percentile(kPercentile(o)); }

}  // namespace

XDQ_PLUGIN(xdq::Calibrator, "percentile", "1.0.0", "p-quantile of |x| from a histogram", schema, create)
