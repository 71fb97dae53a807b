// MSE / Lp search (BRECQ, MQBench): candidate ranges shrink the observed [min, max] by 1% per step;
// the range with the least ||x - Q(x)||_p wins. The error is evaluated on a signed histogram (bin
// centers weighted by counts), so the search costs O(bins * steps) however much data was observed.
#include <cmath>
#include <limits>

#include "xdq/plugin/interfaces.h"
#include "xdq/quant/histogram.h"

namespace {

class MseObserver : public xdq::RangeObserver {
 public:
  MseObserver(const xdq::QuantSpec& spec, int steps, double p, int bins) : spec_(spec), steps_(steps), p_(p), hist_(bins) {}
  void observe(const at::Tensor& x) override { hist_.add(x); }

  xdq::Range range() const override {
    const double w = hist_.width();
    if (w == 0.0) return {hist_.min(), hist_.max()};
    xdq::Range best{hist_.min(), hist_.max()};
    double best_err = std::numeric_limits<double>::infinity();
    for (int k = 0; k < steps_; ++k) {
      const double shrink = 1.0 - 0.01 * k;
      if (shrink <= 0) break;
      const xdq::Range candidate{hist_.min() * shrink, hist_.max() * shrink};
      const double err = error(candidate);
      if (err < best_err) {
        best_err = err;
        best = candidate;
      }
    }
    return best;
  }

 private:
  double error(const xdq::Range& r) const {
    const xdq::QParams q = xdq::qparams_from_range(spec_, r);
    const double s = q.scale.item<float>();
    const double z = q.zero_point.item<int>();
    const double lo = static_cast<double>(q.qmin), hi = static_cast<double>(q.qmax);
    auto qerr = [&](double x) {
      const double code = std::min(std::max(std::nearbyint(x / s) + z, lo), hi);
      return std::pow(std::fabs((code - z) * s - x), p_);
    };
    double err = 0.0;
    const double w = hist_.width();
    for (int i = 0; i < hist_.bins(); ++i) {
      const double center = (i + 0.5) * w;
      if (hist_.positive()[i] > 0) err += hist_.positive()[i] * qerr(center);
      if (hist_.negative()[i] > 0) err += hist_.negative()[i] * qerr(-center);
    }
    return err;
  }

  xdq::QuantSpec spec_;
  int steps_;
  double p_;
  xdq::Histogram hist_;
};

class Mse : public xdq::Calibrator {
 public:
  Mse(int steps, double p, int bins) : steps_(steps), p_(p), bins_(bins) {}
  std::unique_ptr<xdq::RangeObserver> make_observer(const xdq::QuantSpec& spec) const override {
    return std::make_unique<MseObserver>(spec, steps_, p_, bins_);
  }

 private:
  int steps_;
  double p_;
  int bins_;
};

xdq::OptionSchema schema() {
  return {xdq::OptionSpec::integer("steps", 80, "candidate ranges, each 1% narrower than the last").range(1, 100),
          xdq::OptionSpec::number("p", 2.4, "norm of the quantization error (BRECQ 2.4, MQBench 2.0)").range(0, 10, true),
          xdq::OptionSpec::integer("bins", 2048, "histogram bins per sign").range(16, 1 << 16)};
}
xdq::Plugin* create(const xdq::Options& o) {
  return new Mse(static_cast<int>(o.integer("steps")), o.number("p"), static_cast<int>(o.integer("bins")));
}

}  // namespace

XDQ_PLUGIN(xdq::Calibrator, "mse", "1.0.0", "Lp-error search over shrinking ranges", schema, create)
