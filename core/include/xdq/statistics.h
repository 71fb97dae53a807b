#pragma once
// The statistics results carry: an interval for a top-1 measured on a finite test set, and a paired test
// for two models evaluated on the same test images.
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

}  // namespace xdq
