#pragma once
// What one quantizer does: bit width, integer grid, granularity, scale constraints.
#include <cstdint>
#include <string>

namespace xdq {

// The set of levels a quantizer rounds to.
enum class Grid {
  uniform,  // affine: scale * (code - zero_point), codes [qmin, qmax]
  // Levels s * 2^(-k/2) for codes k = 0 .. 2^b - 1, and 0 for what lies below the last one: the log-sqrt(2)
  // grid of RepQ-ViT for post-softmax values in [0, 1]. s is the largest level (the range's max). Per tensor.
  log_sqrt2,
  // PTQ4ViT's twin uniform grid for post-GELU values: codes [0, 2^(b-1) - 1] at scale s for x >= 0 (s from
  // the range's max), codes [-2^(b-1), 0] at the fixed scale kGeluMinimum / 2^(b-1) for x < 0, where GELU's
  // outputs lie in [-0.17, 0]. One sign bit chooses the region. Per tensor.
  twin_uniform,
};

// GELU's minimum, -0.169971 at x = -0.751791 (the negative half of the twin uniform grid spans it).
constexpr double kGeluMinimum = -0.16997124254703522;

struct QuantSpec {
  int bits = 8;
  bool symmetric = false;     // zero point fixed at 0
  bool per_channel = false;   // one scale per output channel (weights: axis 0)
  bool narrow_range = false;  // signed grid without its lowest code: [-(2^(b-1)-1), 2^(b-1)-1]
  bool unsigned_range = false;  // grid [0, 2^b - 1] (post-ReLU activations, asymmetric activations)
  bool pow2_scale = false;    // scale = 2^round(log2 s) (fixed-point backends)
  Grid grid = Grid::uniform;  // log_sqrt2 and twin_uniform set the fields above aside

  std::int64_t qmin() const;
  std::int64_t qmax() const;
  std::string describe() const;  // "w4 per-channel asymmetric"
};

}  // namespace xdq
