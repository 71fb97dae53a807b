// KL / entropy calibration (TensorRT, Migacz 2017; pytorch-quantization's histogram calibrator).
// |x| histogram with 2048 bins, bins[0] = bins[1] (so a spike of zeros after ReLU does not dominate).
// For each i from start_bin to 2048: P = bins[:i] with the tail mass added to P[i-1]; Q = bins[:i]
// merged into 2^(b-1) groups (2^b for an unsigned grid), each group's mass spread evenly over its
// non-empty bins. amax = i * width for the last i minimizing KL(P || Q).
// TensorRT's grid is symmetric. For an asymmetric grid the |x| histogram would clip one side by the
// other's statistics (a normalized input's background spike at -0.81 would cut its bright pixels at
// +0.81), so there each sign is searched on its own half of the histogram.
#include <cmath>
#include <limits>
#include <vector>

#include "xdq/plugin/interfaces.h"
#include "xdq/quant/histogram.h"

namespace {

// KL(P||Q) for unnormalized P and Q with equal support handling as scipy.stats.entropy.
double kl_divergence(const std::vector<double>& p, double p_total, const std::vector<double>& q, double q_total) {
  double kl = 0.0;
  for (std::size_t j = 0; j < p.size(); ++j) {
    if (p[j] <= 0) continue;
    if (q[j] <= 0) return std::numeric_limits<double>::infinity();
    const double pn = p[j] / p_total, qn = q[j] / q_total;
    kl += pn * std::log(pn / qn);
  }
  return kl;
}

double amax_from_histogram(std::vector<double> bins, double width, int levels, int start_bin) {
  const int n = static_cast<int>(bins.size());
  if (n > 1) bins[0] = bins[1];
  std::vector<double> tail(n + 1, 0.0);  // tail[i] = sum(bins[i:])
  for (int i = n - 1; i >= 0; --i) tail[i] = tail[i + 1] + bins[i];
  double best = std::numeric_limits<double>::infinity();
  int best_i = n;
  std::vector<double> p, q, group_mass(levels), group_nonzero(levels);
  for (int i = std::min(start_bin, n); i <= n; ++i) {
    p.assign(bins.begin(), bins.begin() + i);
    p[i - 1] += tail[i];
    std::fill(group_mass.begin(), group_mass.end(), 0.0);
    std::fill(group_nonzero.begin(), group_nonzero.end(), 0.0);
    for (int j = 0; j < i; ++j) {
      if (bins[j] == 0) continue;
      const int g = static_cast<int>((static_cast<long long>(j) * levels) / i);
      group_mass[g] += bins[j];
      group_nonzero[g] += 1;
    }
    q.assign(i, 0.0);
    double q_total = 0.0;
    for (int j = 0; j < i; ++j) {
      if (bins[j] == 0) continue;
      const int g = static_cast<int>((static_cast<long long>(j) * levels) / i);
      q[j] = group_mass[g] / group_nonzero[g];
      q_total += q[j];
    }
    const double p_total = tail[0];
    const double kl = q_total > 0 ? kl_divergence(p, p_total, q, q_total) : std::numeric_limits<double>::infinity();
    if (kl <= best) {  // `<=`: the last argmin, as TensorRT
      best = kl;
      best_i = i;
    }
  }
  return best_i * width;
}

class KlObserver : public xdq::RangeObserver {
 public:
  KlObserver(const xdq::QuantSpec& spec, int bins, int start_bin)
      : levels_(1 << (spec.bits - 1 + (spec.unsigned_range ? 1 : 0))),
        per_sign_(!spec.symmetric),
        start_bin_(start_bin),
        hist_(bins) {}
  void observe(const at::Tensor& x) override { hist_.add(x); }
  xdq::Range range() const override {
    if (hist_.width() == 0.0) return {hist_.min(), hist_.max()};
    if (!per_sign_) {
      const double amax = amax_from_histogram(hist_.magnitude(), hist_.width(), levels_, start_bin_);
      return {std::max(hist_.min(), -amax), std::min(hist_.max(), amax)};
    }
    const double hi = hist_.max() > 0 ? amax_from_histogram(hist_.positive(), hist_.width(), levels_, start_bin_) : 0.0;
    const double lo = hist_.min() < 0 ? amax_from_histogram(hist_.negative(), hist_.width(), levels_, start_bin_) : 0.0;
    return {std::max(hist_.min(), -lo), std::min(hist_.max(), hi)};
  }

 private:
  int levels_;
  bool per_sign_;
  int start_bin_;
  xdq::Histogram hist_;
};

class Kl : public xdq::Calibrator {
 public:
  Kl(int bins, int start_bin) : bins_(bins), start_bin_(start_bin) {}
  std::unique_ptr<xdq::RangeObserver> make_observer(const xdq::QuantSpec& spec) const override {
    return std::make_unique<KlObserver>(spec, bins_, start_bin_);
  }

 private:
  int bins_, start_bin_;
};

xdq::OptionSchema schema() {
  return {xdq::OptionSpec::integer("bins", 2048, "|x| histogram bins").range(16, 1 << 16),
          xdq::OptionSpec::integer("start_bin", 128, "smallest candidate clipping bin").range(1, 1 << 16)};
}
xdq::Plugin* create(const xdq::Options& o) {
  return new Kl(static_cast<int>(o.integer("bins")), static_cast<int>(o.integer("start_bin")));
}

}  // namespace

XDQ_PLUGIN(xdq::Calibrator, "kl", "1.0.0", "TensorRT entropy (KL-divergence) calibration", schema, create)
