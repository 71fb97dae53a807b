// KL / entropy calibration (TensorRT, Migacz 2017; pytorch-quantization's histogram calibrator).
// |x| histogram (2048 bins by default), bins[0] = bins[1] (so a spike of zeros after ReLU does not dominate).
// For each i from start_bin to the bin count: P = bins[:i] with the tail mass added to P[i-1]; Q = bins[:i]
// merged into 2^(b-1) groups (2^b for an unsigned grid), each group's mass spread evenly over its
// non-empty bins. amax = i * width for the last i minimizing KL(P || Q).
// TensorRT's grid is symmetric. For an asymmetric grid the |x| histogram would clip one side by the
// other's statistics (a normalized input's background spike at -0.81 would cut its bright pixels at
// +0.81), so there each sign is searched on its own half of the histogram.
#include <cmath>
#include <limits>
#include <vector>

#include "xdq/plugin/interfaces.h"

namespace {

// KL(P || Q) written as sum_j p_j/P * (log p_j - log P - log q_j + log Q): log p_j is computed once per
// histogram and log q_j once per group, which keeps the search O(bins^2) additions instead of logs.
double amax_from_histogram(std::vector<double> bins, double width, int levels, int start_bin) {
  const int n = static_cast<int>(bins.size());
  if (n > 1) bins[0] = bins[1];
  std::vector<double> tail(n + 1, 0.0);  // tail[i] = sum(bins[i:])
  for (int i = n - 1; i >= 0; --i) tail[i] = tail[i + 1] + bins[i];
  const double total = tail[0];
  if (total <= 0) return n * width;
  std::vector<double> log_bins(n, 0.0);
  for (int j = 0; j < n; ++j)
    if (bins[j] > 0) log_bins[j] = std::log(bins[j]);
  const double log_total = std::log(total);
  double best = std::numeric_limits<double>::infinity();
  int best_i = n;
  std::vector<double> group_mass(levels), group_nonzero(levels), group_log_q(levels);
  std::vector<int> group_of(n);
  for (int i = std::min(start_bin, n); i <= n; ++i) {
    std::fill(group_mass.begin(), group_mass.end(), 0.0);
    std::fill(group_nonzero.begin(), group_nonzero.end(), 0.0);
    for (int j = 0; j < i; ++j) {
      const int g = static_cast<int>((static_cast<long long>(j) * levels) / i);
      group_of[j] = g;
      if (bins[j] == 0) continue;
      group_mass[g] += bins[j];
      group_nonzero[g] += 1;
    }
    for (int g = 0; g < levels; ++g)
      if (group_nonzero[g] > 0) group_log_q[g] = std::log(group_mass[g] / group_nonzero[g]);
    const double q_total = total - tail[i];  // Q spreads exactly the mass of bins[:i]
    if (q_total <= 0) continue;
    const double log_q_total = std::log(q_total);
    double kl = 0.0;
    for (int j = 0; j + 1 < i; ++j) {
      if (bins[j] == 0) continue;
      kl += bins[j] * (log_bins[j] - log_total - group_log_q[group_of[j]] + log_q_total);
    }
    const double p_last = bins[i - 1] + tail[i];  // the clipped tail lands in the last bin
    if (p_last > 0) {
      if (bins[i - 1] == 0) continue;  // q = 0 where p > 0: infinite divergence
      kl += p_last * (std::log(p_last) - log_total - group_log_q[group_of[i - 1]] + log_q_total);
    }
    kl /= total;
    if (kl <= best) {  // `<=`: the last argmin, as TensorRT
      best = kl;
      best_i = i;
    }
  }
  return best_i * width;
}

class Kl : public xdq::Calibrator {
 public:
  explicit Kl(int start_bin) : start_bin_(start_bin) {}

  xdq::Range range_from_statistics(const xdq::ActivationStatistics& s, const xdq::QuantSpec& spec) const override {
    const xdq::Histogram& hist = s.histogram();
    if (hist.width() == 0.0) return {hist.min(), hist.max()};
    const int levels = 1 << (spec.bits - 1 + (spec.unsigned_range ? 1 : 0));
    if (spec.symmetric) {
      const double amax = amax_from_histogram(hist.magnitude(), hist.width(), levels, start_bin_);
      return {std::max(hist.min(), -amax), std::min(hist.max(), amax)};
    }
    const double hi = hist.max() > 0 ? amax_from_histogram(hist.positive(), hist.width(), levels, start_bin_) : 0.0;
    const double lo = hist.min() < 0 ? amax_from_histogram(hist.negative(), hist.width(), levels, start_bin_) : 0.0;
    return {std::max(hist.min(), -lo), std::min(hist.max(), hi)};
  }

 private:
  int start_bin_;
};

const xdq::Option<std::int64_t> kStartBin =
    xdq::OptionSpec::integer("start_bin", 128, "smallest candidate clipping bin").range(1, 1 << 16);
xdq::OptionSchema schema() { return {kStartBin.spec()}; }
xdq::Plugin* create(const xdq::Options& o) {
  return new Kl(static_cast<int>(kStartBin(o)));
}

}  // namespace

XDQ_PLUGIN(xdq::Calibrator, "kl", "1.0.0", "TensorRT entropy (KL-divergence) calibration", schema, create)
