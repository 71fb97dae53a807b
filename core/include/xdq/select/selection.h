#pragma once
// What selector plugins share: per-image summaries of the FP model's activations, gathered in one forward
// pass over the pool, and the greedy subset search that matches a set's mean moments to a reference
// (bn_match: the BatchNorm running statistics; target_match: a target-domain sample's).
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "xdq/plugin/interfaces.h"

namespace xdq {

// The pool's features, in one pass of batch_size images (progress lines on context.progress).
PoolFeatures pool_features(const SelectionContext& context, const FeatureRequest& request);
// The same for other images (pixels [n, C, H, W]), e.g. the target sample.
PoolFeatures image_features(const SelectionContext& context, const at::Tensor& images, const FeatureRequest& request);

// Per image, the standardized moment gaps of each site against a reference (mean μ, variance σ² per
// channel): (E[x] − μ)/σ and (E[x²] − μ² − σ²)/σ², each site scaled by 1/sqrt(2C) so that for a set S
// the squared norm of the rows' mean is Σ_sites mean_c[gap_mean² + gap_square²] (every site weighs the same).
// [N, D] float32.
at::Tensor standardized_moment_gaps(const std::vector<SiteFeatures>& sites, const std::vector<at::Tensor>& reference_mean,
                                    const std::vector<at::Tensor>& reference_var);
// The reference moments of a sample: per site, the per-channel mean and variance over all its images.
void sample_moments(const std::vector<SiteFeatures>& sites, std::vector<at::Tensor>& mean, std::vector<at::Tensor>& var);

// ||mean of rows S of z||², in double.
double mean_gap(const at::Tensor& z, const std::vector<std::int64_t>& rows);

// Greedy forward selection of `count` rows of z (starting from row `first`) minimizing ||mean_S z||², then
// rounds of single swaps (each position replaced by the best row outside S when that lowers the
// objective), until a round changes nothing or `max_rounds` rounds ran. trace: the objective after the
// greedy phase and after every accepted swap (non-increasing).
struct MeanMatch {
  std::vector<std::int64_t> rows;
  std::vector<double> trace;
  bool converged = false;
};
MeanMatch match_mean(const at::Tensor& z, std::int64_t count, std::int64_t first, int max_rounds);

// match_mean from a seeded first row, as a Selection: measures moment_distance (final), _greedy (before
// the swaps), _random (of the seed's random subset of the same size) and swaps_converged; the trace.
Selection select_by_moments(const at::Tensor& gaps, const SelectionContext& context, int max_rounds);

// The first row of a greedy method: drawn from [0, n) by the seed.
std::int64_t seeded_index(std::int64_t n, std::uint64_t seed);

}  // namespace xdq
