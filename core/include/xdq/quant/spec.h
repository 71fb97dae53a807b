#pragma once
// What one quantizer does: bit width, integer grid, granularity, scale constraints.
#include <cstdint>
#include <string>

namespace xdq {

struct QuantSpec {
  int bits = 8;
  bool symmetric = false;     // zero point fixed at 0
  bool per_channel = false;   // one scale per output channel (weights: axis 0)
  bool narrow_range = false;  // signed grid without its lowest code: [-(2^(b-1)-1), 2^(b-1)-1]
  bool unsigned_range = false;  // grid [0, 2^b - 1] (post-ReLU activations, asymmetric activations)
  bool pow2_scale = false;    // scale = 2^round(log2 s) (fixed-point backends)
  // Levels s * 2^(-k/2) for codes k = 0 .. 2^b - 1, and 0 for what lies below the last one: the log-sqrt(2)
  // grid of RepQ-ViT for post-softmax values in [0, 1]. s is the largest level (the range's max). Per tensor.
  bool log_sqrt2 = false;

  std::int64_t qmin() const;
  std::int64_t qmax() const;
  std::string describe() const;  // "w4 per-channel asymmetric"
};

}  // namespace xdq
