#pragma once
// The statistics results carry: an interval for a top-1 measured on a finite test set, a paired test
// for two models evaluated on the same test images, and the rank correlations that validate a predictor
// of accuracy against the accuracies realized.
#include <cstdint>
#include <string>
#include <vector>

namespace xdq {

struct Interval {
  double low = 0.0, high = 0.0;
};

// The percentile bootstrap interval at `level` of an accuracy of `correct` right answers out of `n` images.
// Resampling the n images with replacement makes the count of right ones Binomial(n, correct / n), so the
// interval is that distribution's (1 - level) / 2 and (1 + level) / 2 quantiles (smallest k whose CDF
// reaches them) over n: what infinitely many resamples converge to, without their noise.
Interval bootstrap_interval(std::int64_t correct, std::int64_t n, double level = 0.95);

// McNemar's exact test of two classifiers on the same images, from the discordant images (right only
// with A: `a_only`; right only with B: `b_only`): the two-sided p-value 2 P(X <= min(a_only, b_only)),
// X ~ Binomial(a_only + b_only, 1/2), at most 1 (1 when no image is discordant).
double mcnemar_exact_p(std::int64_t a_only, std::int64_t b_only);
// The same from per-image right/wrong of A and B on the same images (an Error when their counts differ).
double mcnemar_exact_p(const std::vector<bool>& a, const std::vector<bool>& b);

// Per-image right/wrong in test order as text: image i is bit i % 8 of byte i / 8, each byte two lowercase
// hex digits. unpack_bits reads `n` images back; an Error when the text does not hold exactly them.
std::string pack_bits(const std::vector<bool>& bits);
std::vector<bool> unpack_bits(const std::string& hex, std::int64_t n);

// Spearman's rank correlation: Pearson's correlation of the ranks, tied values sharing their mean rank.
// NaN when either side has fewer than two distinct values (no ranking to correlate).
double spearman(const std::vector<double>& x, const std::vector<double>& y);
// Kendall's tau-b: (concordant − discordant) / sqrt((n0 − n1)(n0 − n2)) over all pairs, n0 = n(n−1)/2 and
// n1, n2 the pairs tied in x and in y. NaN as for spearman.
double kendall_tau_b(const std::vector<double>& x, const std::vector<double>& y);

// The percentile bootstrap interval at `level` of a correlation `statistic` (spearman, kendall_tau_b): the
// pairs (x_i, y_i) resampled with replacement `resamples` times from `seed`; resamples with no ranking
// (NaN) are left out. NaN bounds when all are.
Interval bootstrap_correlation_interval(const std::vector<double>& x, const std::vector<double>& y,
                                        double (*statistic)(const std::vector<double>&, const std::vector<double>&),
                                        int resamples = 1000, std::uint64_t seed = 0, double level = 0.95);

}  // namespace xdq
