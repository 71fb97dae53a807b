// ACIQ (Banner, Nahshan & Soudry, NeurIPS 2019): analytical clipping for a Laplace (or Gaussian) prior.
// Laplace b = mean|x - mean(x)| (Gaussian: the standard deviation), alpha = k(M) * b with the paper's
// constants for M bits. Two-sided: [mean - alpha, mean + alpha]; non-negative data (after ReLU) uses the
// one-sided constants and [0, alpha]. Both clipped to the observed range. Statistics are averaged over
// batches, weighted by element count.
#include <algorithm>
#include <cmath>
#include <map>
#include <string>

#include "xdq/error.h"
#include "xdq/plugin/interfaces.h"

namespace {

const std::map<int, double> kLaplace = {{2, 2.83}, {3, 3.89}, {4, 5.03}, {5, 6.2}, {6, 7.41}, {7, 8.64}, {8, 9.89}};
const std::map<int, double> kLaplaceOneSided = {{2, 3.89}, {3, 5.02}, {4, 6.2}, {5, 7.41}, {6, 8.64}, {7, 9.89}, {8, 11.16}};
const std::map<int, double> kGauss = {{2, 1.71}, {3, 2.15}, {4, 2.55}, {5, 2.93}, {6, 3.28}, {7, 3.61}, {8, 3.92}};
const std::map<int, double> kGaussOneSided = {{2, 2.15}, {3, 2.55}, {4, 2.93}, {5, 3.28}, {6, 3.61}, {7, 3.92}, {8, 4.2}};

double constant(const std::map<int, double>& table, int bits) {
  // Above 8 bits clipping barely matters; the 8-bit constant is the conservative choice.
  return table.at(std::clamp(bits, 2, 8));
}

class Aciq : public xdq::Calibrator {
 public:
  explicit Aciq(bool laplace) : laplace_(laplace) {}

  xdq::Range range_from_statistics(const xdq::ActivationStatistics& s, const xdq::QuantSpec& spec) const override {
    double count = 0, mean_sum = 0, spread_sum = 0;
    for (const xdq::BatchSummary& b : s.batches()) {
      const double n = static_cast<double>(b.count);
      count += n;
      mean_sum += b.mean * n;
      spread_sum += (laplace_ ? b.abs_deviation : b.squared_deviation) * n;
    }
    if (count == 0) return {};
    const double min = s.histogram().min(), max = s.histogram().max();
    const double mean = mean_sum / count;
    const double b = laplace_ ? spread_sum / count : std::sqrt(spread_sum / count);
    if (min >= 0.0) {
      const double alpha = constant(laplace_ ? kLaplaceOneSided : kGaussOneSided, spec.bits) * b;
      return {0.0, std::min(max, alpha)};
    }
    const double alpha = constant(laplace_ ? kLaplace : kGauss, spec.bits) * b;
    return {std::max(min, mean - alpha), std::min(max, mean + alpha)};
  }

 private:
  bool laplace_;
};

const xdq::Option<std::string> kPrior =
    xdq::OptionSpec::text("prior", "laplace", "assumed distribution of the activations").one_of({"laplace", "gauss"});
xdq::OptionSchema schema() { return {kPrior.spec()}; }
xdq::Plugin* create(const xdq::Options& o) { return new Aciq(kPrior(o) == "laplace"); }

}  // namespace

XDQ_PLUGIN(xdq::Calibrator, "aciq", "1.0.0", "analytical clipping for Laplace/Gaussian priors", schema, create)
