#include "xdq/quant/quantizer.h"

#include <algorithm>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <limits>
#include <sstream>

#include "xdq/error.h"
#include "xdq/exec/executor.h"
#include "../vector_clones.h"

namespace xdq {

std::int64_t QuantSpec::qmin() const {
  if (unsigned_range) return 0;
  return narrow_range ? -((std::int64_t{1} << (bits - 1)) - 1) : -(std::int64_t{1} << (bits - 1));
}

std::int64_t QuantSpec::qmax() const {
  return unsigned_range ? (std::int64_t{1} << bits) - 1 : (std::int64_t{1} << (bits - 1)) - 1;
}

std::string QuantSpec::describe() const {
  std::ostringstream out;
  out << bits << "-bit " << (per_channel ? "per-channel " : "per-tensor ") << (symmetric ? "symmetric" : "asymmetric");
  if (narrow_range) out << " narrow";
  if (unsigned_range) out << " unsigned";
  if (pow2_scale) out << " pow2";
  if (grid == Grid::log_sqrt2) return std::to_string(bits) + "-bit log-sqrt2";
  if (grid == Grid::twin_uniform) return std::to_string(bits) + "-bit twin-uniform";
  return out.str();
}

QParams qparams_from_range(const QuantSpec& spec, const at::Tensor& min, const at::Tensor& max, int axis) {
  if (spec.bits < 2 || spec.bits > 16) throw Error("quantizer bits must be in [2, 16], got " + std::to_string(spec.bits));
  const double eps = std::numeric_limits<float>::epsilon();
  if (spec.grid != Grid::uniform) {
    if (axis >= 0) throw Error("the " + spec.describe() + " grid is per tensor, and was asked per channel");
    QParams q;
    q.grid = spec.grid;
    if (spec.grid == Grid::log_sqrt2) {
      q.scale = at::clamp_min(max.to(at::kDouble), eps).to(at::kFloat);
      q.qmin = 0;
      q.qmax = (std::int64_t{1} << spec.bits) - 1;
    } else {
      q.qmin = -(std::int64_t{1} << (spec.bits - 1));
      q.qmax = (std::int64_t{1} << (spec.bits - 1)) - 1;
      q.scale = at::clamp_min(max.to(at::kDouble) / static_cast<double>(q.qmax), eps).to(at::kFloat);
    }
    q.zero_point = at::zeros_like(q.scale, at::kInt);
    return q;
  }
  const double qmin = static_cast<double>(spec.qmin()), qmax = static_cast<double>(spec.qmax());
  at::Tensor lo = at::clamp_max(min.to(at::kDouble), 0.0);
  at::Tensor hi = at::clamp_min(max.to(at::kDouble), 0.0);
  at::Tensor scale, zero;
  if (spec.symmetric) {
    at::Tensor amax = at::maximum(-lo, hi);
    scale = spec.unsigned_range ? amax / qmax : amax / ((qmax - qmin) / 2.0);
    scale = at::clamp_min(scale, eps);
    if (spec.pow2_scale) scale = at::pow(2.0, at::round(at::log2(scale)));
    zero = at::zeros_like(scale);
  } else {
    scale = at::clamp_min((hi - lo) / (qmax - qmin), eps);
    if (spec.pow2_scale) scale = at::pow(2.0, at::round(at::log2(scale)));
    zero = at::clamp(qmin - at::round(lo / scale), qmin, qmax);
  }
  QParams q;
  q.scale = scale.to(at::kFloat);
  q.zero_point = zero.to(at::kInt);
  q.qmin = spec.qmin();
  q.qmax = spec.qmax();
  q.axis = axis;
  return q;
}

QParams qparams_from_range(const QuantSpec& spec, const Range& range) {
  return qparams_from_range(spec, at::scalar_tensor(range.min, at::kDouble), at::scalar_tensor(range.max, at::kDouble));
}

namespace {

// Inference-only per-tensor fake quantization, bit-identical to torch's kernel: code = clamp(round(x / s))
// on the grid shifted by z, out = code * s. Rounding to nearest-even by adding and subtracting 1.5 * 2^23
// (exact for |v| < 2^22, and v is clamped to the grid first), so the loop vectorizes without SSE4.1.
XDQ_VECTOR_CLONES void fake_quantize_range(const float* src, float* dst, std::int64_t begin, std::int64_t end,
                                           float scale, float lo, float hi) {
  constexpr float kRound = 12582912.0f;
  const float inv_scale = 1.0f / scale;
  for (std::int64_t i = begin; i < end; ++i) {
    const float v = std::min(std::max(src[i] * inv_scale, lo - 1.0f), hi + 1.0f);
    const float code = std::min(std::max((v + kRound) - kRound, lo), hi);
    dst[i] = code * scale;
  }
}

at::Tensor fake_quantize_inference(const at::Tensor& x_in, float scale, std::int64_t zero, std::int64_t qmin,
                                   std::int64_t qmax) {
  // Elementwise over memory: any dense layout (channels-last included) is kept as it is.
  const at::Tensor x = x_in.is_non_overlapping_and_dense() ? x_in : x_in.contiguous();
  at::Tensor out = at::empty_like(x);
  const float lo = static_cast<float>(qmin - zero), hi = static_cast<float>(qmax - zero);
  const float* src = x.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, x.numel(), 1 << 14, [&](std::int64_t begin, std::int64_t end) {
    fake_quantize_range(src, dst, begin, end, scale, lo, hi);
  });
  return out;
}

// The log-sqrt(2) grid: code k = round(-2 log2(x / s)) clamped to [0, qmax], value s * 2^(-k/2); what lies
// below the last level (a code past qmax, zero, or a negative input) becomes 0. Straight-through gradient.
at::Tensor log_sqrt2_fake_quantize(const at::Tensor& x, const QParams& q) {
  const double s = q.scale.item<float>();
  at::Tensor quantized;
  {
    at::NoGradGuard no_grad;
    const at::Tensor code = at::round(-2.0 * at::log2(at::clamp_min(x, 0.0) / s));
    const at::Tensor kept = code.le(static_cast<double>(q.qmax));
    quantized = at::where(kept, at::exp2(-0.5 * at::clamp_min(code, 0.0)) * s, at::zeros_like(x));
  }
  return x.requires_grad() ? x + (quantized - x).detach() : quantized;
}

double twin_negative_scale(const QParams& q) { return -kGeluMinimum / static_cast<double>(-q.qmin); }

// The twin uniform grid: x >= 0 to clamp(round(x / s), 0, qmax) * s, x < 0 to clamp(round(x / s_neg), qmin, 0)
// * s_neg (each half is 0 on the other's side, so the two add). Straight-through gradient.
at::Tensor twin_uniform_fake_quantize(const at::Tensor& x, const QParams& q) {
  const double s = q.scale.item<float>(), s_neg = twin_negative_scale(q);
  at::Tensor quantized;
  {
    at::NoGradGuard no_grad;
    quantized = at::clamp(at::round(x / s), 0.0, static_cast<double>(q.qmax)) * s +
                at::clamp(at::round(x / s_neg), static_cast<double>(q.qmin), 0.0) * s_neg;
  }
  return x.requires_grad() ? x + (quantized - x).detach() : quantized;
}

}  // namespace

ScalarGrid::ScalarGrid(const QParams& q)
    : scale_(q.scale.item<float>()),
      zero_(q.zero_point.item<int>()),
      qmin_(static_cast<double>(q.qmin)),
      qmax_(static_cast<double>(q.qmax)),
      negative_scale_(q.grid == Grid::twin_uniform ? twin_negative_scale(q) : 0.0),
      grid_(q.grid) {
  if (q.per_channel()) throw Error("ScalarGrid: a per-tensor quantizer was expected");
}

double ScalarGrid::operator()(double x) const {
  if (grid_ == Grid::log_sqrt2) {
    const double code = x > 0 ? std::max(std::nearbyint(-2.0 * std::log2(x / scale_)), 0.0) : qmax_ + 1;
    return code <= qmax_ ? scale_ * std::exp2(-0.5 * code) : 0.0;
  }
  if (grid_ == Grid::twin_uniform) {
    if (x >= 0) return std::min(std::nearbyint(x / scale_), qmax_) * scale_;
    return std::max(std::nearbyint(x / negative_scale_), qmin_) * negative_scale_;
  }
  const double code = std::min(std::max(std::nearbyint(x / scale_) + zero_, qmin_), qmax_);
  return (code - zero_) * scale_;
}

at::Tensor fake_quantize(const at::Tensor& x, const QParams& q) {
  if (q.grid == Grid::log_sqrt2) return log_sqrt2_fake_quantize(x, q);
  if (q.grid == Grid::twin_uniform) return twin_uniform_fake_quantize(x, q);
  if (q.per_channel())
    return at::fake_quantize_per_channel_affine(x, q.scale.to(x.device()), q.zero_point.to(x.device()), q.axis, q.qmin,
                                                q.qmax);
  const float scale = q.scale.item<float>();
  const int zero = q.zero_point.item<int>();
  if (x.is_cpu() && x.scalar_type() == at::kFloat && !(at::GradMode::is_enabled() && x.requires_grad()))
    return fake_quantize_inference(x, scale, zero, q.qmin, q.qmax);
  return at::fake_quantize_per_tensor_affine(x, scale, zero, q.qmin, q.qmax);
}

void set_fake_quantizer(Executor& exec, int value, const QParams& q) {
  auto hook = [q](const at::Tensor& x) { return fake_quantize(x, q); };
  if (q.per_channel())
    exec.set_value_hook(value, hook);
  else
    exec.set_elementwise_hook(value, hook);
}

QParams weight_qparams(const at::Tensor& weight, const QuantSpec& spec, const std::string& method, int mse_steps,
                       double mse_p) {
  at::Tensor w = weight.detach();
  at::Tensor flat = spec.per_channel ? w.reshape({w.size(0), -1}) : w.reshape({1, -1});
  at::Tensor min = std::get<0>(flat.min(1)), max = std::get<0>(flat.max(1));
  auto make = [&](const at::Tensor& lo, const at::Tensor& hi) {
    return spec.per_channel ? qparams_from_range(spec, lo, hi, 0) : qparams_from_range(spec, lo[0], hi[0]);
  };
  if (method == "minmax") return make(min, max);
  if (method != "mse" && method != "quantile_search")
    throw Error("weight range method must be minmax, mse or quantile_search, got '" + method + "'");
  at::Tensor best_err = at::full({flat.size(0)}, std::numeric_limits<double>::infinity(), w.options().dtype(at::kDouble));
  at::Tensor best_min = min.clone(), best_max = max.clone();
  // Each channel keeps the candidate with its least error.
  auto consider = [&](const at::Tensor& lo, const at::Tensor& hi, double p) {
    at::Tensor err = (fake_quantize(w, make(lo, hi)) - w).abs().pow(p).reshape({flat.size(0), -1}).sum(1).to(at::kDouble);
    at::Tensor better = err < best_err;
    best_err = at::where(better, err, best_err);
    best_min = at::where(better, lo, best_min);
    best_max = at::where(better, hi, best_max);
  };
  if (method == "quantile_search") {  // RepQ-ViT: the quantiles 1 - 10^-k, k = 3, 4, 5, of each channel; squared error
    const at::Tensor values = flat.to(at::kFloat);
    for (int k = 3; k <= 5; ++k) {
      const double q = 1.0 - std::pow(10.0, -k);
      consider(at::quantile(values, 1.0 - q, 1).to(min.dtype()), at::quantile(values, q, 1).to(max.dtype()), 2.0);
    }
    return make(best_min, best_max);
  }
  for (int k = 0; k < mse_steps; ++k) {
    const double shrink = 1.0 - 0.01 * k;
    if (shrink <= 0) break;
    consider(min * shrink, max * shrink, mse_p);
  }
  return make(best_min, best_max);
}

}  // namespace xdq
