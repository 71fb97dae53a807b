// The statistics results carry, against values worked out by hand and against brute force: the bootstrap
// interval of a top-1 (every resample of a tiny test set enumerated), McNemar's exact test, and the
// per-image bits results.json keeps.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "test_util.h"
#include "xdq/statistics.h"

namespace xdq::test {
namespace {

// 7 right of 10: the count of right answers in a resample is Binomial(10, 0.7), whose CDF is 0.0106 at 3
// and 0.0473 at 4 (the 2.5 % quantile: 4), 0.9718 at 9 and 1 at 10 (the 97.5 % quantile: 10).
TEST(Statistics, BootstrapIntervalOfSevenOfTenByHand) {
  const Interval ci = bootstrap_interval(7, 10);
  EXPECT_DOUBLE_EQ(ci.low, 0.4);
  EXPECT_DOUBLE_EQ(ci.high, 1.0);
  // Every image right (or wrong): every resample gives the same accuracy.
  EXPECT_DOUBLE_EQ(bootstrap_interval(10, 10).low, 1.0);
  EXPECT_DOUBLE_EQ(bootstrap_interval(0, 10).high, 0.0);
}

// All n^n resamples (with replacement, in order) of a test set of n images enumerated: the accuracy's
// distribution over them, and its 2.5 % and 97.5 % quantiles (smallest value whose share of resamples at
// or below it reaches the level), equal the exact interval.
TEST(Statistics, BootstrapIntervalEqualsEveryResampleEnumerated) {
  for (const std::vector<int>& right : {std::vector<int>{1, 1, 0, 1, 0, 1}, std::vector<int>{1, 0, 0, 0, 0}, std::vector<int>{1, 1, 1, 1, 0, 1, 1}}) {
    const std::size_t n = right.size();
    std::vector<std::int64_t> resamples_with(n + 1, 0);  // resamples with k right answers
    std::vector<std::size_t> pick(n, 0);
    std::int64_t total = 0;
    for (;;) {
      int k = 0;
      for (std::size_t i : pick) k += right[i];
      ++resamples_with[static_cast<std::size_t>(k)];
      ++total;
      std::size_t d = 0;
      while (d < n && ++pick[d] == n) pick[d++] = 0;
      if (d == n) break;
    }
    const auto quantile = [&](double level) {
      std::int64_t below = 0;
      for (std::size_t k = 0; k <= n; ++k) {
        below += resamples_with[k];
        if (static_cast<double>(below) >= level * static_cast<double>(total) * (1 - 1e-12)) return static_cast<double>(k) / static_cast<double>(n);
      }
      return 1.0;
    };
    const std::int64_t correct = std::count(right.begin(), right.end(), 1);
    const Interval ci = bootstrap_interval(correct, static_cast<std::int64_t>(n));
    EXPECT_DOUBLE_EQ(ci.low, quantile(0.025)) << correct << " of " << n;
    EXPECT_DOUBLE_EQ(ci.high, quantile(0.975)) << correct << " of " << n;
  }
}

// On 10 000 images the interval is the normal approximation's p ± 1.96 sqrt(p (1 - p) / n) to within 2.5
// images: one for the discrete quantile, under one for the binomial's skew (Cornish-Fisher: (1 - 2p)(z² - 1) / 6
// counts, 0.38 here).
TEST(Statistics, BootstrapIntervalOnALargeTestSetIsTheNormalOne) {
  const Interval ci = bootstrap_interval(9000, 10000);
  const double half = 1.96 * std::sqrt(0.9 * 0.1 / 10000);
  EXPECT_NEAR(ci.low, 0.9 - half, 2.5e-4);
  EXPECT_NEAR(ci.high, 0.9 + half, 2.5e-4);
}

// 1 image right only with A, 9 only with B: P(X <= 1) for X ~ Binomial(10, 1/2) is 11 / 1024, p = 22 / 1024.
// 5 and 5: 2 P(X <= 5) = 2 * 638 / 1024 > 1, so 1. No discordant image: 1. 0 and 6: 2 / 64. The terms come
// from lgamma and exp in double: each within a few ulps, so 1e-14 relative.
TEST(Statistics, McNemarExactByHand) {
  EXPECT_NEAR(mcnemar_exact_p(1, 9), 22.0 / 1024, 1e-14 * 22.0 / 1024);
  EXPECT_NEAR(mcnemar_exact_p(9, 1), 22.0 / 1024, 1e-14 * 22.0 / 1024);
  EXPECT_DOUBLE_EQ(mcnemar_exact_p(5, 5), 1.0);
  EXPECT_DOUBLE_EQ(mcnemar_exact_p(0, 0), 1.0);
  EXPECT_NEAR(mcnemar_exact_p(0, 6), 2.0 / 64, 1e-15);
  // From per-image bits: images 0-2 agree, image 3 right only with A, images 4-9 right only with B.
  const std::vector<bool> a = {true, false, true, true, false, false, false, false, false, false};
  const std::vector<bool> b = {true, false, true, false, true, true, true, true, true, true};
  EXPECT_NEAR(mcnemar_exact_p(a, b), 2.0 * 8 / 128, 1e-15);
  EXPECT_NE(error_of([&] { mcnemar_exact_p(a, std::vector<bool>(3)); }).find("not paired"), std::string::npos);
}

// Image i is bit i % 8 of byte i / 8: images 0 and 8 right of 9 give the bytes 0x01 0x01.
TEST(Statistics, PerImageBitsRoundTrip) {
  std::vector<bool> bits(9, false);
  bits[0] = bits[8] = true;
  EXPECT_EQ(pack_bits(bits), "0101");
  EXPECT_EQ(unpack_bits("0101", 9), bits);
  std::vector<bool> many(1001);
  for (std::size_t i = 0; i < many.size(); ++i) many[i] = (i * 7919) % 3 == 0;
  EXPECT_EQ(unpack_bits(pack_bits(many), 1001), many);
  EXPECT_NE(error_of([] { unpack_bits("0101", 20); }).find("do not hold 20 images"), std::string::npos);
  EXPECT_NE(error_of([] { unpack_bits("0g", 3); }).find("'g' is not a lowercase hex digit"), std::string::npos);
}

// Without ties Spearman's rho is 1 − 6 Σ d² / (n (n² − 1)), d the rank differences (a closed form the
// implementation, Pearson on mean ranks, does not use); with ties, worked by hand.
TEST(Statistics, SpearmanAgainstTheClosedFormAndByHand) {
  std::mt19937 rng(3);
  for (int trial = 0; trial < 20; ++trial) {
    const int n = 3 + trial;
    std::vector<double> x(n), y(n);
    std::vector<int> rx(n), ry(n);
    std::iota(rx.begin(), rx.end(), 1);
    std::iota(ry.begin(), ry.end(), 1);
    std::shuffle(rx.begin(), rx.end(), rng);
    std::shuffle(ry.begin(), ry.end(), rng);
    double d2 = 0;
    for (int i = 0; i < n; ++i) {
      x[i] = std::exp(0.3 * rx[i]);  // any increasing map of the ranks
      y[i] = -10.0 + ry[i] * ry[i];
      d2 += static_cast<double>((rx[i] - ry[i]) * (rx[i] - ry[i]));
    }
    EXPECT_NEAR(spearman(x, y), 1.0 - 6.0 * d2 / (n * (n * n - 1.0)), 1e-12) << n;
  }
  // x ranks 1, 2.5, 2.5, 4; y ranks 1, 3, 2, 4: Σ dx dy = 4.5, Σ dx² = 4.5, Σ dy² = 5.
  EXPECT_NEAR(spearman({1, 2, 2, 3}, {1, 3, 2, 4}), 4.5 / std::sqrt(4.5 * 5.0), 1e-12);
  EXPECT_TRUE(std::isnan(spearman({1, 1, 1}, {1, 2, 3})));
}

// Pairs counted by hand: y = 3 1 2 5 4 against increasing x has 7 concordant and 3 discordant pairs; with a
// tie in x (pair 0-1) and one in y (pair 1-2), 4 concordant pairs of 6 give 4 / sqrt(5 · 5).
TEST(Statistics, KendallTauBByHand) {
  EXPECT_DOUBLE_EQ(kendall_tau_b({1, 2, 3, 4, 5}, {3, 1, 2, 5, 4}), 0.4);
  EXPECT_DOUBLE_EQ(kendall_tau_b({1, 1, 2, 3}, {1, 2, 2, 3}), 0.8);
  EXPECT_DOUBLE_EQ(kendall_tau_b({1, 2, 3}, {3, 2, 1}), -1.0);
  EXPECT_TRUE(std::isnan(kendall_tau_b({1, 2}, {5, 5})));
}

// A monotone relation is one in every resample that still ranks something: the interval is [1, 1] (or
// [−1, −1]); a resample drawing one pair over and over has no ranking and is left out. On noisy data the
// interval holds the estimate, and the same seed gives the same interval.
TEST(Statistics, BootstrapIntervalOfARankCorrelation) {
  const std::vector<double> x{1, 2, 3, 4, 5, 6, 7, 8}, y{2, 4, 8, 16, 32, 64, 128, 256};
  std::vector<double> down(y.rbegin(), y.rend());
  EXPECT_DOUBLE_EQ(bootstrap_correlation_interval(x, y, spearman).low, 1.0);
  EXPECT_DOUBLE_EQ(bootstrap_correlation_interval(x, down, kendall_tau_b).high, -1.0);
  std::mt19937 rng(5);
  std::normal_distribution<double> noise;
  std::vector<double> a(60), b(60);
  for (int i = 0; i < 60; ++i) a[i] = noise(rng), b[i] = a[i] + noise(rng);
  const Interval ci = bootstrap_correlation_interval(a, b, spearman, 2000, 7);
  EXPECT_LT(ci.low, spearman(a, b));
  EXPECT_GT(ci.high, spearman(a, b));
  EXPECT_GT(ci.low, 0.3);  // true rho of x and x + noise: 6/π asin(1/(2·sqrt 2)) ≈ 0.69
  const Interval again = bootstrap_correlation_interval(a, b, spearman, 2000, 7);
  EXPECT_EQ(ci.low, again.low);
  EXPECT_EQ(ci.high, again.high);
}

}  // namespace
}  // namespace xdq::test
