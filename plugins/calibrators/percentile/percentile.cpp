// percentile: |x| histogram (2048 bins, grown with the range); amax = right edge of the bin where the
// cumulative count reaches p% (99.99 by default), so at least p% of the values lie within [-amax, amax].
#include <algorithm>

#include "xdq/plugin/interfaces.h"
#include "xdq/quant/histogram.h"

namespace {

class PercentileObserver : public xdq::RangeObserver {
 public:
  PercentileObserver(double percentile, int bins) : percentile_(percentile), hist_(bins) {}
  void observe(const at::Tensor& x) override { hist_.add(x); }
  xdq::Range range() const override {
    const auto mag = hist_.magnitude();
    double total = 0;
    for (double c : mag) total += c;
    const double target = percentile_ / 100.0 * total;
    double cumulative = 0;
    std::size_t bin = 0;
    for (; bin + 1 < mag.size(); ++bin) {
      cumulative += mag[bin];
      if (cumulative >= target) break;
    }
    const double amax = static_cast<double>(bin + 1) * hist_.width();
    return {std::max(hist_.min(), -amax), std::min(hist_.max(), amax)};
  }

 private:
  double percentile_;
  xdq::Histogram hist_;
};

class Percentile : public xdq::Calibrator {
 public:
  Percentile(double p, int bins) : p_(p), bins_(bins) {}
  std::unique_ptr<xdq::RangeObserver> make_observer(const xdq::QuantSpec&) const override {
    return std::make_unique<PercentileObserver>(p_, bins_);
  }

 private:
  double p_;
  int bins_;
};

xdq::OptionSchema schema() {
  return {xdq::OptionSpec::number("percentile", 99.99, "share of |x| kept inside the range, in percent").range(0, 100, true),
          xdq::OptionSpec::integer("bins", 2048, "histogram bins").range(16, 1 << 16)};
}
xdq::Plugin* create(const xdq::Options& o) {
  return new Percentile(o.number("percentile"), static_cast<int>(o.integer("bins")));
}

}  // namespace

XDQ_PLUGIN(xdq::Calibrator, "percentile", "1.0.0", "p-quantile of |x| from a histogram", schema, create)
