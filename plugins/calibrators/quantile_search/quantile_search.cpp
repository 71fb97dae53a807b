// quantile_search (RepQ-ViT's activation calibration, Li et al. 2023): candidate ranges are quantiles of the
// data, [Q(1 - q), Q(q)] for q = 1 - 10^-k with k = min_nines .. max_nines (0.999, 0.9999, 0.99999 by
// default); the candidate with the least ||x - Q(x)||_p wins. On the log-sqrt2 grid a candidate is its top
// level Q(q). Quantiles and errors come from the signed histogram (linear within a bin, bin centers weighted
// by counts), so the search costs O(bins) per candidate however much data was observed.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "xdq/error.h"
#include "xdq/plugin/interfaces.h"

namespace {

// The histogram's bins in ascending order as [lo, hi) intervals clipped to the observed extremes.
struct Bin {
  double lo, hi, count;
};

std::vector<Bin> ascending_bins(const xdq::Histogram& h) {
  std::vector<Bin> bins;
  const double w = h.width();
  for (int i = h.bins() - 1; i >= 0; --i)
    if (h.negative()[i] > 0) bins.push_back({std::max(-(i + 1) * w, h.min()), std::min(-i * w, h.max()), h.negative()[i]});
  for (int i = 0; i < h.bins(); ++i)
    if (h.positive()[i] > 0) bins.push_back({std::max(i * w, h.min()), std::min((i + 1) * w, h.max()), h.positive()[i]});
  return bins;
}

// The value below which a share `q` of the data lies, linear within the bin that holds it.
double quantile(const std::vector<Bin>& bins, double total, double q) {
  const double target = q * total;
  double below = 0;
  for (const Bin& b : bins) {
    if (below + b.count >= target) return b.lo + (b.hi - b.lo) * std::clamp((target - below) / b.count, 0.0, 1.0);
    below += b.count;
  }
  return bins.back().hi;
}

class QuantileSearch : public xdq::Calibrator {
 public:
  QuantileSearch(int min_nines, int max_nines, double p) : min_nines_(min_nines), max_nines_(max_nines), p_(p) {}
  bool handles_any_grid() const override { return true; }

  xdq::Range range_from_statistics(const xdq::ActivationStatistics& s, const xdq::QuantSpec& spec) const override {
    const xdq::Histogram& hist = s.histogram();
    if (hist.width() == 0.0) return {hist.min(), hist.max()};
    const std::vector<Bin> bins = ascending_bins(hist);
    double total = 0;
    for (const Bin& b : bins) total += b.count;
    xdq::Range best{hist.min(), hist.max()};
    double best_err = std::numeric_limits<double>::infinity();
    for (int k = min_nines_; k <= max_nines_; ++k) {
      const double q = 1.0 - std::pow(10.0, -k);
      const xdq::Range candidate{quantile(bins, total, 1.0 - q), quantile(bins, total, q)};
      const xdq::ScalarGrid grid(xdq::qparams_from_range(spec, candidate));
      double err = 0;
      for (const Bin& b : bins) {
        const double center = 0.5 * (b.lo + b.hi);
        err += b.count * std::pow(std::fabs(grid(center) - center), p_);
      }
      if (err < best_err) {
        best_err = err;
        best = candidate;
      }
    }
    return best;
  }

 private:
  int min_nines_, max_nines_;
  double p_;
};

const xdq::Option<std::int64_t> kMinNines =
    xdq::OptionSpec::integer("min_nines", 3, "first candidate quantile 1 - 10^-min_nines (3: 0.999)").range(1, 7);
const xdq::Option<std::int64_t> kMaxNines =
    xdq::OptionSpec::integer("max_nines", 5, "last candidate quantile 1 - 10^-max_nines (5: 0.99999)").range(1, 7);
const xdq::Option<double> kP = xdq::OptionSpec::number("p", 2.0, "norm of the quantization error").range(0, 10, true);
xdq::OptionSchema schema() { return {kMinNines.spec(), kMaxNines.spec(), kP.spec()}; }
xdq::Plugin* create(const xdq::Options& o) {
  if (kMinNines(o) > kMaxNines(o)) throw xdq::Error("quantile_search: min_nines must not exceed max_nines");
  return new QuantileSearch(static_cast<int>(kMinNines(o)), static_cast<int>(kMaxNines(o)), kP(o));
}

}  // namespace

XDQ_PLUGIN(xdq::Calibrator, "quantile_search", "1.0.0", "least-error choice among data quantiles (RepQ-ViT)", schema, create)
