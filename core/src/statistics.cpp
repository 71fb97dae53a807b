#include "xdq/statistics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "xdq/error.h"

namespace xdq {

namespace {
// log C(n, k) p^k (1 - p)^(n - k), for 0 < p < 1.
double log_binomial_pmf(std::int64_t n, std::int64_t k, double p) {
  const double nd = static_cast<double>(n), kd = static_cast<double>(k);
  return std::lgamma(nd + 1) - std::lgamma(kd + 1) - std::lgamma(nd - kd + 1) + kd * std::log(p) + (nd - kd) * std::log1p(-p);
}
}  // namespace

Interval bootstrap_interval(std::int64_t correct, std::int64_t n, double level) {
  if (n <= 0) return {};
  const double p = static_cast<double>(correct) / static_cast<double>(n);
  if (correct <= 0 || correct >= n) return {p, p};  // every resample has the same accuracy
  const double lower_tail = (1.0 - level) / 2, upper_tail = (1.0 + level) / 2;
  Interval out{-1.0, -1.0};
  double cdf = 0.0;
  for (std::int64_t k = 0; k <= n; ++k) {
    cdf += std::exp(log_binomial_pmf(n, k, p));
    if (out.low < 0 && cdf >= lower_tail) out.low = static_cast<double>(k) / static_cast<double>(n);
    if (cdf >= upper_tail) {
      out.high = static_cast<double>(k) / static_cast<double>(n);
      return out;
    }
  }
  out.high = 1.0;  // the summed probabilities fell short of the tail by rounding
  return out;
}

double mcnemar_exact_p(std::int64_t a_only, std::int64_t b_only) {
  const std::int64_t m = a_only + b_only;
  if (m == 0) return 1.0;
  double tail = 0.0;
  for (std::int64_t i = 0; i <= std::min(a_only, b_only); ++i) tail += std::exp(log_binomial_pmf(m, i, 0.5));
  return std::min(1.0, 2.0 * tail);
}

double mcnemar_exact_p(const std::vector<bool>& a, const std::vector<bool>& b) {
  if (a.size() != b.size())
    throw Error("McNemar's test: " + std::to_string(a.size()) + " and " + std::to_string(b.size()) + " images are not paired");
  std::int64_t a_only = 0, b_only = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    a_only += a[i] && !b[i];
    b_only += b[i] && !a[i];
  }
  return mcnemar_exact_p(a_only, b_only);
}

std::string pack_bits(const std::vector<bool>& bits) {
  static const char* digits = "0123456789abcdef";
  std::string hex;
  for (std::size_t byte = 0; byte * 8 < bits.size(); ++byte) {
    unsigned value = 0;
    for (std::size_t b = 0; b < 8 && byte * 8 + b < bits.size(); ++b) value |= (bits[byte * 8 + b] ? 1u : 0u) << b;
    hex += digits[value >> 4];
    hex += digits[value & 15];
  }
  return hex;
}

std::vector<bool> unpack_bits(const std::string& hex, std::int64_t n) {
  if (n < 0 || hex.size() != 2 * static_cast<std::size_t>((n + 7) / 8))
    throw Error("per-image results: " + std::to_string(hex.size()) + " hex digits do not hold " + std::to_string(n) + " images");
  const auto nibble = [&](char c) -> unsigned {
    if (c >= '0' && c <= '9') return static_cast<unsigned>(c - '0');
    if (c >= 'a' && c <= 'f') return static_cast<unsigned>(c - 'a' + 10);
    throw Error(std::string("per-image results: '") + c + "' is not a lowercase hex digit");
  };
  std::vector<bool> bits(static_cast<std::size_t>(n));
  for (std::size_t i = 0; i < bits.size(); ++i) {
    const unsigned byte = nibble(hex[2 * (i / 8)]) << 4 | nibble(hex[2 * (i / 8) + 1]);
    bits[i] = (byte >> (i % 8)) & 1u;
  }
  return bits;
}

namespace {
void check_pairs(const std::vector<double>& x, const std::vector<double>& y) {
  if (x.size() != y.size())
    throw Error("rank correlation: " + std::to_string(x.size()) + " values against " + std::to_string(y.size()));
}

// 1-based ranks, ties sharing their mean rank.
std::vector<double> mean_ranks(const std::vector<double>& v) {
  std::vector<std::size_t> order(v.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return v[a] < v[b]; });
  std::vector<double> rank(v.size());
  for (std::size_t i = 0; i < order.size();) {
    std::size_t j = i;
    while (j + 1 < order.size() && v[order[j + 1]] == v[order[i]]) ++j;
    for (std::size_t k = i; k <= j; ++k) rank[order[k]] = 0.5 * static_cast<double>(i + j) + 1.0;
    i = j + 1;
  }
  return rank;
}
}  // namespace

double spearman(const std::vector<double>& x, const std::vector<double>& y) {
  check_pairs(x, y);
  const std::vector<double> rx = mean_ranks(x), ry = mean_ranks(y);
  const double n = static_cast<double>(x.size());
  const double mx = std::accumulate(rx.begin(), rx.end(), 0.0) / n, my = std::accumulate(ry.begin(), ry.end(), 0.0) / n;
  double sxy = 0, sxx = 0, syy = 0;
  for (std::size_t i = 0; i < rx.size(); ++i) {
    sxy += (rx[i] - mx) * (ry[i] - my);
    sxx += (rx[i] - mx) * (rx[i] - mx);
    syy += (ry[i] - my) * (ry[i] - my);
  }
  if (sxx == 0 || syy == 0) return std::numeric_limits<double>::quiet_NaN();
  return sxy / std::sqrt(sxx * syy);
}

double kendall_tau_b(const std::vector<double>& x, const std::vector<double>& y) {
  check_pairs(x, y);
  double concordant = 0, discordant = 0, tied_x = 0, tied_y = 0, pairs = 0;
  for (std::size_t i = 0; i < x.size(); ++i)
    for (std::size_t j = i + 1; j < x.size(); ++j) {
      pairs += 1;
      const double dx = x[i] - x[j], dy = y[i] - y[j];
      if (dx == 0) tied_x += 1;
      if (dy == 0) tied_y += 1;
      if (dx * dy > 0) concordant += 1;
      if (dx * dy < 0) discordant += 1;
    }
  const double denominator = std::sqrt((pairs - tied_x) * (pairs - tied_y));
  if (denominator == 0) return std::numeric_limits<double>::quiet_NaN();
  return (concordant - discordant) / denominator;
}

Interval bootstrap_correlation_interval(const std::vector<double>& x, const std::vector<double>& y,
                                        double (*statistic)(const std::vector<double>&, const std::vector<double>&),
                                        int resamples, std::uint64_t seed, double level) {
  check_pairs(x, y);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  if (x.empty()) return {nan, nan};
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::size_t> pick(0, x.size() - 1);
  std::vector<double> values, rx(x.size()), ry(y.size());
  for (int r = 0; r < resamples; ++r) {
    for (std::size_t i = 0; i < x.size(); ++i) {
      const std::size_t k = pick(rng);
      rx[i] = x[k];
      ry[i] = y[k];
    }
    if (const double v = statistic(rx, ry); !std::isnan(v)) values.push_back(v);
  }
  if (values.empty()) return {nan, nan};
  std::sort(values.begin(), values.end());
  // The smallest value whose share of resamples at or below it reaches each level (as bootstrap_interval).
  const auto quantile = [&](double q) {
    const auto k = static_cast<std::size_t>(std::ceil(q * static_cast<double>(values.size()) - 1e-9));
    return values[std::min(values.size() - 1, k == 0 ? 0 : k - 1)];
  };
  return {quantile((1 - level) / 2), quantile((1 + level) / 2)};
}

}  // namespace xdq
