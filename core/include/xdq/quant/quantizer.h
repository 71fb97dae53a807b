#pragma once
// Ranges -> scale/zero-point, and fake quantization equal to torch.fake_quantize_per_{tensor,channel}_affine
// (it calls them), with their straight-through gradient.
#include <ATen/ATen.h>

#include "xdq/quant/spec.h"

namespace xdq {

class Executor;

// A calibrated real range [min, max] of one tensor.
struct Range {
  double min = 0.0;
  double max = 0.0;
};

struct QParams {
  at::Tensor scale;       // float: 0-d (per-tensor) or [C] (per-channel)
  at::Tensor zero_point;  // int32, same shape as scale
  std::int64_t qmin = 0, qmax = 255;
  int axis = -1;          // per-channel axis; -1 for per-tensor
  Grid grid = Grid::uniform;  // log_sqrt2: scale is the largest level; twin_uniform: scale is the positive
                              // half's (both: zero_point 0, per tensor)

  bool per_channel() const { return axis >= 0; }
};

// Affine:   s = (max' - min') / (qmax - qmin) with min' = min(min, 0), max' = max(max, 0),
//           z = clamp(qmin - round(min'/s), qmin, qmax).
// Symmetric: s = max(|min|, |max|) / ((qmax - qmin) / 2), z = 0 (unsigned grid: s = max / qmax).
// s >= float eps; pow2_scale rounds s to 2^round(log2 s). min/max are 0-d or [C] tensors.
// Log-sqrt(2) grid: s = max(max, eps), z = 0, codes [0, 2^b - 1].
// Twin uniform grid: s = max(max, 0) / (2^(b-1) - 1) (at least eps), z = 0, codes [-2^(b-1), 2^(b-1) - 1].
QParams qparams_from_range(const QuantSpec& spec, const at::Tensor& min, const at::Tensor& max, int axis = -1);
QParams qparams_from_range(const QuantSpec& spec, const Range& range);

at::Tensor fake_quantize(const at::Tensor& x, const QParams& q);

// A per-tensor quantizer as plain numbers, for calibrators' error searches over many candidate ranges:
// grid(x) is x quantized and dequantized, as fake_quantize computes it.
class ScalarGrid {
 public:
  explicit ScalarGrid(const QParams& q);
  double operator()(double x) const;

 private:
  double scale_, zero_, qmin_, qmax_;
  double negative_scale_;  // the twin uniform grid's negative half
  Grid grid_;
};

// fake_quantize with `q` as the hook of `value` in `exec` (a per-tensor quantizer as an elementwise hook).
void set_fake_quantizer(Executor& exec, int value, const QParams& q);

// Per-channel (axis 0) or per-tensor weight ranges: "minmax", or "mse" (Lp search over ranges shrunk by
// 1% steps, keeping each channel's least ||W - Q(W)||_p; BRECQ's 80 steps and p = 2.4 by default), or
// "quantile_search" (RepQ-ViT: each channel's [Q(1 - q), Q(q)] for q = 0.999, 0.9999, 0.99999 with the least
// squared error).
QParams weight_qparams(const at::Tensor& weight, const QuantSpec& spec, const std::string& method,
                       int mse_steps = 80, double mse_p = 2.4);

}  // namespace xdq
