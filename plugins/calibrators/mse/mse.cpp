// MSE / Lp search (BRECQ, MQBench): candidate ranges shrink the observed [min, max] by 1% per step;
// the range with the least ||x - Q(x)||_p wins. The error is evaluated on a signed histogram (bin
// centers weighted by counts), so the search costs O(bins * steps) however much data was observed.
#include <cmath>
#include <limits>

#include "xdq/plugin/interfaces.h"

namespace {

class Mse : public xdq::Calibrator {
 public:
  bool handles_any_grid() const override { return true; }  // errors measured through ScalarGrid
  Mse(int steps, double p) : steps_(steps), p_(p) {}

  xdq::Range range_from_statistics(const xdq::ActivationStatistics& s, const xdq::QuantSpec& spec) const override {
    const xdq::Histogram& hist = s.histogram();
    if (hist.width() == 0.0) return {hist.min(), hist.max()};
    xdq::Range best{hist.min(), hist.max()};
    double best_err = std::numeric_limits<double>::infinity();
    for (int k = 0; k < steps_; ++k) {
      const double shrink = 1.0 - 0.01 * k;
      if (shrink <= 0) break;
      const xdq::Range candidate{hist.min() * shrink, hist.max() * shrink};
      const double err = error(hist, spec, candidate);
      if (err < best_err) {
        best_err = err;
        best = candidate;
      }
    }
    return best;
  }

 private:
  double error(const xdq::Histogram& hist, const xdq::QuantSpec& spec, const xdq::Range& r) const {
    const xdq::ScalarGrid grid(xdq::qparams_from_range(spec, r));
    auto qerr = [&](double x) { return std::pow(std::fabs(grid(x) - x), p_); };
    double err = 0.0;
    const double w = hist.width();
    for (int i = 0; i < hist.bins(); ++i) {
      const double center = (i + 0.5) * w;
      if (hist.positive()[i] > 0) err += hist.positive()[i] * qerr(center);
      if (hist.negative()[i] > 0) err += hist.negative()[i] * qerr(-center);
    }
    return err;
  }

  int steps_;
  double p_;
};

const xdq::Option<std::int64_t> kSteps =
    xdq::OptionSpec::integer("steps", 80, "candidate ranges, each 1% narrower than the last").range(1, 100);
const xdq::Option<double> kP =
    xdq::OptionSpec::number("p", 2.4, "norm of the quantization error (BRECQ 2.4, MQBench 2.0)").range(0, 10, true);
xdq::OptionSchema schema() { return {kSteps.spec(), kP.spec()}; }
xdq::Plugin* create(const xdq::Options& o) {
  return new Mse(static_cast<int>(kSteps(o)), kP(o));
}

}  // namespace

XDQ_PLUGIN(xdq::Calibrator, "mse", "1.0.0", "Lp-error search over shrinking ranges", schema, create)
