#include "xdq/synthesis/synthesis.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <memory>
#include <optional>
#include <sstream>

#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/custom_function.h>

#include "xdq/error.h"
#include "xdq/exec/executor.h"
#include "xdq/optim.h"
#include "xdq/progress.h"
#include "../vector_clones.h"

namespace xdq {

namespace {

constexpr double kZeroqEps = 1e-6;

at::Tensor per_channel(const std::vector<double>& v, std::int64_t channels) {
  std::vector<float> f(channels);
  for (std::int64_t c = 0; c < channels; ++c) f[c] = static_cast<float>(v.size() == 1 ? v[0] : v.at(c));
  return at::tensor(f).view({1, channels, 1, 1});
}

// Σ_n ‖a − b_n‖² / N for b [N, C] (ZeroQ's own_loss).
at::Tensor squared_distance_per_sample(const at::Tensor& a, const at::Tensor& b) {
  return (b - a.view({1, -1})).pow(2).sum() / static_cast<double>(b.size(0));
}

std::string shape_text(const std::vector<std::int64_t>& s) {
  std::string t;
  for (auto d : s) t += (t.empty() ? "" : "x") + std::to_string(d);
  return t;
}

// One model during synthesis: an executor whose BatchNorm layers take the moments their loss reads.
struct HookedModel {
  const SynthesisModel* model;
  std::unique_ptr<Executor> exec;
  std::vector<int> bn_nodes;
  std::shared_ptr<std::vector<BnMoments>> captured;  // per BN layer, this step's
  at::Tensor norm_mean, norm_std;  // its input normalization, per channel [1, C, 1, 1]
};

}  // namespace

namespace {

// A BN layer (eval mode) applied in the pass that sums its input: y = fma(x, α, β) per channel, then the
// residual added and ReLU when fused in. α = γ · (1 / sqrt(var + eps)) and β = fma(−mean, α, bias), in
// float: the bits of ATen's eval batch_norm on AVX2 and AVX-512 machines (its kernels fuse both
// multiply-adds), then of its add (one rounding) and ReLU.
struct AffineOut {
  const float *alpha, *beta;  // [C]; null: sums only
  bool relu;
  float* y;
  const float* residual = nullptr;  // laid out as x; null: none
};

template <bool kResidual>
[[gnu::always_inline]] inline float affine(float x, float alpha, float beta, const float* residual, std::int64_t e,
                                           bool relu) {
  float v = std::fma(x, alpha, beta);
  if constexpr (kResidual) v = v + residual[e];
  return relu && v < 0 ? 0.0f : v;
}

// out.y over one channel's row [begin, end) (one α, β), or over one pixel's C channels from e.
template <bool kResidual>
[[gnu::always_inline]] inline void affine_row(const float* x, float alpha, float beta, std::int64_t begin,
                                              std::int64_t end, const AffineOut& out) {
  for (std::int64_t e = begin; e < end; ++e) out.y[e] = affine<kResidual>(x[e], alpha, beta, out.residual, e, out.relu);
}
template <bool kResidual>
[[gnu::always_inline]] inline void affine_pixel(const float* x, std::int64_t e, std::int64_t C, const AffineOut& out) {
  for (std::int64_t c = 0; c < C; ++c)
    out.y[e + c] = affine<kResidual>(x[e + c], out.alpha[c], out.beta[c], out.residual, e + c, out.relu);
}

// Σx and Σx² in double over the positions of rows [begin, end) of a contiguous [rows, P] float32 tensor
// (row = image · C + channel), and the layer's output where asked.
XDQ_VECTOR_CLONES void row_sums(const float* data, std::int64_t P, std::int64_t C, std::int64_t begin, std::int64_t end,
                                double* d1, double* d2, const AffineOut& out) {
  for (std::int64_t row = begin; row < end; ++row) {
    constexpr int kLanes = 8;  // interleaved sums: the loop vectorizes
    double a[kLanes] = {}, b[kLanes] = {};
    const float* r = data + row * P;
    std::int64_t p = 0;
    for (; p + kLanes <= P; p += kLanes)
      for (int l = 0; l < kLanes; ++l) {
        const double v = r[p + l];
        a[l] += v;
        b[l] += v * v;
      }
    for (; p < P; ++p) {
      a[0] += r[p];
      b[0] += static_cast<double>(r[p]) * r[p];
    }
    for (int l = 0; l < kLanes; ++l) {
      d1[row] += a[l];
      d2[row] += b[l];
    }
    if (out.alpha) {  // the row again, from L1/L2
      const float alpha = out.alpha[row % C], beta = out.beta[row % C];
      if (out.residual)
        affine_row<true>(data, alpha, beta, row * P, (row + 1) * P, out);
      else
        affine_row<false>(data, alpha, beta, row * P, (row + 1) * P, out);
    }
  }
}

// The same for images [begin, end) of a channels-last tensor (memory [N, P, C]: a pixel's channels at a time).
XDQ_VECTOR_CLONES void pixel_sums(const float* data, std::int64_t P, std::int64_t C, std::int64_t begin,
                                  std::int64_t end, double* d1, double* d2, const AffineOut& out) {
  for (std::int64_t n = begin; n < end; ++n)
    for (std::int64_t p = 0; p < P; ++p) {
      const std::int64_t e = (n * P + p) * C;
      for (std::int64_t c = 0; c < C; ++c) {
        const double v = data[e + c];
        d1[n * C + c] += v;
        d2[n * C + c] += v * v;
      }
      if (out.alpha && out.residual)
        affine_pixel<true>(data, e, C, out);
      else if (out.alpha)
        affine_pixel<false>(data, e, C, out);
    }
}

// Σx and Σx² in double over the positions of each (image, channel) of a 4-D float32 CPU tensor, contiguous
// or channels-last, in one read: [N, C] each (ATen's two reductions and x² in between read it three
// times); and the layer's output `out` in the same pass where asked.
std::pair<at::Tensor, at::Tensor> position_sums(const at::Tensor& x, const AffineOut& out) {
  const std::int64_t N = x.size(0), C = x.size(1), P = x.size(2) * x.size(3);
  at::Tensor s1 = at::zeros({N, C}, x.options().dtype(at::kDouble)), s2 = at::zeros({N, C}, s1.options());
  const float* data = x.data_ptr<float>();
  double *d1 = s1.data_ptr<double>(), *d2 = s2.data_ptr<double>();
  if (!x.is_contiguous())
    at::parallel_for(0, N, 1, [&](std::int64_t begin, std::int64_t end) { pixel_sums(data, P, C, begin, end, d1, d2, out); });
  else
    at::parallel_for(0, N * C, 1, [&](std::int64_t begin, std::int64_t end) { row_sums(data, P, C, begin, end, d1, d2, out); });
  return {s1, s2};
}

// The gradient a BN layer of synthesis passes back to its input x: the layer's own (eval mode; after
// ReLU's when it is fused in) plus the moments' a + b·x (a, b per (image, channel), [N, C]).
struct MomentsGradient {
  const float *x, *gy;      // gy: the gradient of the value passed on (null: none)
  const float *a, *b;
  const float* relu_out;    // ReLU's output when fused (its backward reads y <= 0), else null
  const float *invstd, *w;  // the BN layer's per-channel factors [C] (ones when x is passed on as is)
  float* out;
  float* residual_out;      // the gradient of the residual added before ReLU (the passed one), or null
  std::int64_t P, C;
  bool channels_last;
};

enum class PassedGradient { None, Plain, ThroughRelu };

// Rows [begin, end) of a contiguous tensor ([N·C, P]), or images [begin, end) of a channels-last one
// ([N, P, C]). Each step as autograd formed it from ReLU's, BN's and the moments' backward, so the bits
// are those of the unfused chain: ReLU's mask, then (g · invstd) · w as ATen's eval BatchNorm, then the
// moments' a + b·x as one fused multiply-add (as ATen's addcmul on AVX2 and AVX-512 machines).
template <PassedGradient kind, bool kResidual>
[[gnu::always_inline]] inline void moments_gradient_rows(const MomentsGradient& k, std::int64_t begin, std::int64_t end) {
  const float *__restrict x = k.x, *__restrict gy = k.gy, *__restrict a = k.a, *__restrict b = k.b,
              *__restrict r = k.relu_out, *__restrict s = k.invstd, *__restrict w = k.w;
  float *__restrict out = k.out, *__restrict residual_out = k.residual_out;
  auto element = [&](std::int64_t e, std::int64_t row, std::int64_t c) {
    const float g = std::fma(b[row], x[e], a[row]);
    if constexpr (kind == PassedGradient::None) {
      out[e] = g;
    } else {
      const float passed = kind == PassedGradient::ThroughRelu && r[e] <= 0 ? 0.0f : gy[e];
      out[e] = passed * s[c] * w[c] + g;
    }
  };
  // The residual's gradient (the passed one) in a loop of its own over the image or row just done, from
  // L2: stored in the loop above, it made GCC branch on ReLU's mask instead of vectorizing.
  auto residual_gradient = [&](std::int64_t from, std::int64_t to) {
    if constexpr (kResidual && kind != PassedGradient::None)
      for (std::int64_t e = from; e < to; ++e)
        residual_out[e] = kind == PassedGradient::ThroughRelu && r[e] <= 0 ? 0.0f : gy[e];
  };
  const std::int64_t P = k.P, C = k.C;
  if (k.channels_last) {
    for (std::int64_t i = begin; i < end; ++i) {
      for (std::int64_t e = i * P * C; e < (i + 1) * P * C; e += C)
        for (std::int64_t c = 0; c < C; ++c) element(e + c, i * C + c, c);
      residual_gradient(i * P * C, (i + 1) * P * C);
    }
  } else {
    for (std::int64_t i = begin; i < end; ++i) {
      for (std::int64_t e = i * P; e < (i + 1) * P; ++e) element(e, i, i % C);
      residual_gradient(i * P, (i + 1) * P);
    }
  }
}

XDQ_VECTOR_CLONES void add_moments_gradient(const MomentsGradient& k, std::int64_t begin, std::int64_t end) {
  if (!k.gy)
    moments_gradient_rows<PassedGradient::None, false>(k, begin, end);
  else if (k.relu_out && k.residual_out)
    moments_gradient_rows<PassedGradient::ThroughRelu, true>(k, begin, end);
  else if (k.relu_out)
    moments_gradient_rows<PassedGradient::ThroughRelu, false>(k, begin, end);
  else if (k.residual_out)
    moments_gradient_rows<PassedGradient::Plain, true>(k, begin, end);
  else
    moments_gradient_rows<PassedGradient::Plain, false>(k, begin, end);
}

// Whether x's sums over `dims` (the positions of each image, or also the images) take one pass here.
bool one_pass_sums(const at::Tensor& x, const std::vector<std::int64_t>& dims) {
  const bool dense = x.is_contiguous() || x.is_contiguous(at::MemoryFormat::ChannelsLast);
  const bool positions = dims == std::vector<std::int64_t>{2, 3}, all = dims == std::vector<std::int64_t>{0, 2, 3};
  return x.is_cpu() && x.scalar_type() == at::kFloat && x.dim() == 4 && dense && (positions || all);
}

// Σx and Σx² in double over `dims` (kept as size-1 axes); with one_pass_sums, `out` written in the same pass.
std::pair<at::Tensor, at::Tensor> sums_of_powers(const at::Tensor& x, const std::vector<std::int64_t>& dims,
                                                 const AffineOut& out = {nullptr, nullptr, false, nullptr}) {
  if (!one_pass_sums(x, dims)) return {x.sum(dims, /*keepdim=*/true, at::kDouble), (x * x).sum(dims, true, at::kDouble)};
  auto [s1, s2] = position_sums(x, out);
  if (dims.size() == 3) return {s1.sum(0, true).view({1, -1, 1, 1}), s2.sum(0, true).view({1, -1, 1, 1})};
  return {s1.view({x.size(0), x.size(1), 1, 1}), s2.view({x.size(0), x.size(1), 1, 1})};
}

// A BatchNorm layer run by a synthesis step (eval mode), optionally with the ReLU that alone reads it, and
// the per-channel factors of its passes, computed once per layer rather than at every step.
struct BnLayer {
  BatchNormStats bn;
  bool relu = false;
  at::Tensor alpha, beta;  // AffineOut's [C], for a float32 CPU layer (else undefined: ATen applies it)
  at::Tensor invstd, w;    // the backward's: ATen's eval g · invstd · w, invstd rounded to float from double
};

BnLayer bn_layer(const BatchNormStats& bn, bool relu) {
  BnLayer layer{bn, relu};
  layer.invstd = (1.0 / at::sqrt(bn.var.to(at::kDouble) + bn.eps)).to(bn.var.scalar_type());
  layer.w = bn.gamma.defined() ? bn.gamma : at::ones_like(bn.var);
  if (!bn.var.is_cpu() || bn.var.scalar_type() != at::kFloat) return layer;
  const std::int64_t C = bn.var.numel();
  layer.alpha = at::empty({C}, bn.var.options());
  layer.beta = at::empty({C}, bn.var.options());
  const at::Tensor mean = bn.mean.contiguous(), var = bn.var.contiguous(), gamma = layer.w.contiguous();
  const at::Tensor bias = bn.beta.defined() ? bn.beta.contiguous() : at::zeros({C}, var.options());
  const float *m = mean.data_ptr<float>(), *v = var.data_ptr<float>(), *g = gamma.data_ptr<float>(), *b = bias.data_ptr<float>();
  float *alpha = layer.alpha.data_ptr<float>(), *beta = layer.beta.data_ptr<float>();
  const float eps = static_cast<float>(bn.eps);
  for (std::int64_t c = 0; c < C; ++c) {
    alpha[c] = 1 / std::sqrt(v[c] + eps) * g[c];
    beta[c] = std::fma(-m[c], alpha[c], b[c]);
  }
  return layer;
}

// The layer through ATen (where the sums' pass cannot apply it), the residual added (when defined).
at::Tensor run_layer(const at::Tensor& x, const BnLayer& layer, const at::Tensor& residual) {
  const BatchNormStats& bn = layer.bn;
  at::Tensor y = at::batch_norm(x, bn.gamma, bn.beta, bn.mean, bn.var, false, 0.0, bn.eps, true);
  if (residual.defined()) y = y + residual;
  return layer.relu ? y.relu_() : y;
}

// x's mean and variance over `dims` (kept as size-1 axes), with the value passed on: x itself, or the
// BN layer `layer` applied to x, the residual added (a non-empty `residual`: the add of a residual block)
// and ReLU when the layer has it. The backward forms the gradient to x in one pass: the passed value's
// gradient (back through ReLU and BN when they run inside) plus dL/dm / n + dL/dv · 2(x - m) / (n - ddof),
// and the residual's, the add's, beside it. ATen's var_mean and autograd's var/mean backward took several
// slow passes per BN input, and eval BatchNorm's own backward reads its output gradient twice more for
// the weight and bias gradients that synthesis never asks for.
struct Moments : public torch::autograd::Function<Moments> {
  // `residual` is an empty tensor for none (autograd's apply takes no undefined tensor).
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                                                const at::Tensor& residual, std::vector<std::int64_t> dims,
                                                bool unbiased, const std::optional<BnLayer>& layer) {
    const at::Tensor r = residual.numel() > 0 ? residual.contiguous(x.suggest_memory_format()) : at::Tensor();
    // The layer applied in the pass that sums x where it can be, else by ATen after it.
    const bool fused = layer && layer->alpha.defined() && one_pass_sums(x, dims) &&
                       (!r.defined() || (r.strides() == x.strides() && r.scalar_type() == x.scalar_type()));
    at::Tensor y = fused ? at::empty_like(x) : x;
    // Sums of x and x² accumulated in double: several times faster than at::var_mean here, and exact enough.
    const auto [s1, s2] = sums_of_powers(x, dims, {fused ? layer->alpha.data_ptr<float>() : nullptr,
                                                   fused ? layer->beta.data_ptr<float>() : nullptr, layer && layer->relu,
                                                   fused ? y.data_ptr<float>() : nullptr,
                                                   fused && r.defined() ? r.data_ptr<float>() : nullptr});
    const std::int64_t n = x.numel() / s1.numel();
    const double count = static_cast<double>(n);
    const at::Tensor mean = (s1 / count).to(x.scalar_type());
    const at::Tensor var = at::clamp_min((s2 - s1 * s1 / count) / (unbiased ? count - 1 : count), 0).to(x.scalar_type());
    std::vector<at::Tensor> saved{x, mean};
    if (layer) {
      if (!fused) y = run_layer(x, *layer, r);
      saved.push_back(layer->invstd);
      saved.push_back(layer->w);
      if (layer->relu) saved.push_back(y);
    }
    ctx->save_for_backward(saved);
    ctx->saved_data["factor"] = 2.0 / static_cast<double>(unbiased ? n - 1 : n);
    ctx->saved_data["n"] = static_cast<double>(n);
    ctx->saved_data["residual"] = r.defined();
    return {y, mean, var};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &mean = saved[1];
    const bool layer = saved.size() > 2, relu = saved.size() > 4;
    const double n = ctx->saved_data["n"].toDouble(), factor = ctx->saved_data["factor"].toDouble();
    const at::Tensor g_mean = grads[1].defined() ? grads[1] : at::zeros_like(mean);
    const at::Tensor g_var = grads[2].defined() ? grads[2] * factor : at::zeros_like(mean);
    const at::Tensor a = g_mean / n - g_var * mean;  // dL/dx = a + g_var·x, per (image or all, channel)
    const bool residual = ctx->saved_data["residual"].toBool() && grads[0].defined() && ctx->needs_input_grad(1);
    const bool channels_last = !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
    if (!x.is_cpu() || x.scalar_type() != at::kFloat || x.dim() != 4 || !(x.is_contiguous() || channels_last)) {
      at::Tensor g = at::addcmul(a, g_var, x), g_residual;
      if (grads[0].defined()) {
        at::Tensor d = relu ? at::threshold_backward(grads[0], saved[4], 0) : grads[0];
        if (residual) g_residual = d;
        if (layer) d = d * saved[2].view({1, -1, 1, 1}) * saved[3].view({1, -1, 1, 1});
        g = d + g;
      }
      return {g, g_residual, at::Tensor(), at::Tensor(), at::Tensor()};
    }
    const std::int64_t N = x.size(0), C = x.size(1), P = x.size(2) * x.size(3);
    const at::MemoryFormat format = x.suggest_memory_format();
    const at::Tensor a_nc = a.reshape({-1, C}).expand({N, C}).contiguous(),
                     b_nc = g_var.reshape({-1, C}).expand({N, C}).contiguous();
    const at::Tensor gy = grads[0].defined() ? grads[0].contiguous(format) : at::Tensor();
    const at::Tensor relu_out = relu ? saved[4].contiguous(format) : at::Tensor();
    const at::Tensor invstd = layer ? saved[2] : at::ones({C}, x.options()), w = layer ? saved[3] : invstd;  // ·1·1 exact
    at::Tensor out = at::empty_like(x), g_residual = residual ? at::empty_like(x) : at::Tensor();
    const MomentsGradient k{x.data_ptr<float>(),
                            gy.defined() ? gy.data_ptr<float>() : nullptr,
                            a_nc.data_ptr<float>(),
                            b_nc.data_ptr<float>(),
                            relu ? relu_out.data_ptr<float>() : nullptr,
                            invstd.data_ptr<float>(),
                            w.data_ptr<float>(),
                            out.data_ptr<float>(),
                            residual ? g_residual.data_ptr<float>() : nullptr,
                            P,
                            C,
                            channels_last};
    at::parallel_for(0, channels_last ? N : N * C, 1,
                     [&](std::int64_t begin, std::int64_t end) { add_moments_gradient(k, begin, end); });
    return {out, g_residual, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

std::vector<std::int64_t> moment_dims(const at::Tensor& x, BnStatistics statistics) {
  std::vector<std::int64_t> dims;
  if (statistics == BnStatistics::Batch) dims.push_back(0);
  for (std::int64_t d = 2; d < x.dim(); ++d) dims.push_back(d);
  return dims;
}

}  // namespace

BnMoments bn_moments(const at::Tensor& x, BnStatistics statistics) {
  const auto out = Moments::apply(x, at::empty({0}, x.options()), moment_dims(x, statistics),
                                  statistics == BnStatistics::PerSample, std::nullopt);
  return {out[0], out[1], out[2]};
}

namespace {
BnMoments layer_moments(const at::Tensor& x, const BnLayer& layer, BnStatistics statistics, const at::Tensor& residual) {
  const auto out = Moments::apply(x, residual.defined() ? residual : at::empty({0}, x.options()), moment_dims(x, statistics),
                                  statistics == BnStatistics::PerSample, layer);
  return {out[0], out[1], out[2]};
}
}  // namespace

BnMoments bn_layer_moments(const at::Tensor& x, const BatchNormStats& bn, bool relu, BnStatistics statistics,
                           const at::Tensor& residual) {
  return layer_moments(x, bn_layer(bn, relu), statistics, residual);
}

at::Tensor bn_statistics_loss(const BnMoments& m, BnStatistics statistics, const at::Tensor& running_mean,
                              const at::Tensor& running_var) {
  if (statistics == BnStatistics::Batch)
    return at::norm(m.var.reshape({-1}) - running_var, 2) + at::norm(m.mean.reshape({-1}) - running_mean, 2);
  const std::int64_t N = m.mean.size(0), C = m.mean.size(1);
  const at::Tensor s = at::sqrt(m.var.reshape({N, C}) + kZeroqEps);
  return squared_distance_per_sample(running_mean, m.mean.reshape({N, C})) +
         squared_distance_per_sample(at::sqrt(running_var + kZeroqEps), s);
}

at::Tensor zeroq_bn_loss(const at::Tensor& x, const at::Tensor& running_mean, const at::Tensor& running_var) {
  return bn_statistics_loss(bn_moments(x, BnStatistics::PerSample), BnStatistics::PerSample, running_mean, running_var);
}

at::Tensor deepinversion_bn_loss(const at::Tensor& x, const at::Tensor& running_mean, const at::Tensor& running_var) {
  return bn_statistics_loss(bn_moments(x, BnStatistics::Batch), BnStatistics::Batch, running_mean, running_var);
}

namespace {
std::vector<at::Tensor> neighbour_differences(const at::Tensor& x) {
  using at::indexing::None;
  using at::indexing::Slice;
  return {x.index({Slice(), Slice(), Slice(), Slice(None, -1)}) - x.index({Slice(), Slice(), Slice(), Slice(1, None)}),
          x.index({Slice(), Slice(), Slice(None, -1), Slice()}) - x.index({Slice(), Slice(), Slice(1, None), Slice()}),
          x.index({Slice(), Slice(), Slice(1, None), Slice(None, -1)}) - x.index({Slice(), Slice(), Slice(None, -1), Slice(1, None)}),
          x.index({Slice(), Slice(), Slice(None, -1), Slice(None, -1)}) - x.index({Slice(), Slice(), Slice(1, None), Slice(1, None)})};
}
}  // namespace

at::Tensor total_variation_l2(const at::Tensor& x) {
  at::Tensor sum;
  for (const auto& d : neighbour_differences(x)) sum = sum.defined() ? sum + at::norm(d) : at::norm(d);
  return sum;
}

at::Tensor total_variation_l1(const at::Tensor& x) {
  at::Tensor sum;
  for (const auto& d : neighbour_differences(x)) {
    const at::Tensor t = (d.abs() / 255.0).mean();
    sum = sum.defined() ? sum + t : t;
  }
  return sum;
}

at::Tensor paste_into_box(const at::Tensor& x, const at::Tensor& perm, std::int64_t top, std::int64_t left,
                          std::int64_t height, std::int64_t width) {
  const std::int64_t H = x.size(2), W = x.size(3);
  const at::Tensor pasted = at::upsample_bilinear2d(x.index_select(0, perm), {height, width}, /*align_corners=*/false);
  const std::vector<std::int64_t> pad{left, W - left - width, top, H - top - height};
  const at::Tensor mask = at::constant_pad_nd(at::ones({1, 1, height, width}, x.options()), pad);
  return x * (1 - mask) + at::constant_pad_nd(pasted, pad);  // differentiable to both images
}

std::vector<int> batch_norm_nodes(const Graph& graph, const std::string& model, const std::string& method) {
  std::vector<int> out;
  for (std::size_t i = 0; i < graph.nodes.size(); ++i)
    if (graph.nodes[i].kind == OpKind::BatchNorm) out.push_back(static_cast<int>(i));
  if (out.empty())
    throw Error(method + ": model '" + model +
                "' has no BatchNorm layer (BN-statistic synthesis needs the running statistics of an unfolded model)");
  return out;
}

namespace {

// The graph a synthesis step runs: each BatchNorm becomes one node that takes its input's moments into
// captured[k] and applies the layer, then the add of a residual block where it alone reads the layer
// (alpha 1, the other operand made before the layer), then the ReLU where it alone reads what came
// before. Backward then makes one pass over the layer's input where ReLU, BN and the moments made three,
// and forward the add and ReLU take no pass of their own.
Graph synthesis_graph(const Graph& graph, const std::vector<int>& bn_nodes, BnStatistics statistics,
                      const std::shared_ptr<std::vector<BnMoments>>& captured) {
  Graph out = graph;
  std::vector<int> fused;  // nodes run inside a BN node
  for (std::size_t k = 0; k < bn_nodes.size(); ++k) {
    Node& node = out.nodes[bn_nodes[k]];
    const int bn_output = node.outputs[0];
    int next = graph.only_reader(bn_output);
    if (next >= 0 && graph.nodes[next].op == "aten::add" && graph.nodes[next].inputs.size() == 3) {
      const Node& add = graph.nodes[next];
      const int other = add.inputs[0] == bn_output ? add.inputs[1] : add.inputs[0];
      const int made_by = graph.producer(other);
      if (other != bn_output && made_by >= 0 && made_by < bn_nodes[k] && graph.constant_number(add.inputs[2]) == 1.0) {
        node.inputs.push_back(other);
        node.outputs = add.outputs;
        fused.push_back(next);
        next = graph.only_reader(add.outputs[0]);
      }
    }
    const bool relu = next >= 0 && graph.nodes[next].op == "aten::relu";
    if (relu) {
      node.outputs = graph.nodes[next].outputs;
      fused.push_back(next);
    }
    const BnLayer layer = bn_layer(node.bn, relu);
    node.kind = OpKind::Generic;
    node.op = std::string("xdq::synthesis_batch_norm") + (node.inputs.size() > 1 ? "_add" : "") + (relu ? "_relu" : "");
    node.run = [layer, statistics, captured, k](std::vector<c10::IValue>& stack) {
      const at::Tensor x = stack.at(0).toTensor(), residual = stack.size() > 1 ? stack[1].toTensor() : at::Tensor();
      at::Tensor y;
      if (at::GradMode::is_enabled()) {
        const BnMoments moments = layer_moments(x, layer, statistics, residual);
        (*captured)[k] = {at::Tensor(), moments.mean, moments.var};  // the output stays the graph's
        y = moments.x;
      } else {  // the class count's probe below
        y = run_layer(x, layer, residual);
      }
      stack.clear();
      stack.emplace_back(y);
    };
  }
  std::sort(fused.rbegin(), fused.rend());
  for (int i : fused) out.nodes.erase(out.nodes.begin() + i);
  return out;
}

// One model whose BN layers take their inputs' moments, checked against the synthesized shape;
// `classes` is the label count of the first model, which every other must share.
HookedModel hook_model(const SynthesisModel& m, const std::vector<std::int64_t>& input_shape, BnStatistics statistics,
                       const std::string& method, std::int64_t& classes, std::string& first_name) {
  const std::int64_t C = input_shape[0], H = input_shape[1], W = input_shape[2];
  const std::vector<int> bn_nodes = batch_norm_nodes(*m.graph, m.name, method);
  auto captured = std::make_shared<std::vector<BnMoments>>(bn_nodes.size());
  HookedModel h{&m, std::make_unique<Executor>(synthesis_graph(*m.graph, bn_nodes, statistics, captured)), bn_nodes,
                captured, per_channel(m.preprocess.mean, C).to(m.graph->device()),
                per_channel(m.preprocess.std, C).to(m.graph->device())};
  if (!m.input_shape.empty() && m.input_shape != input_shape)
    throw Error(method + ": model '" + m.name + "' reads " + shape_text(m.input_shape) + " images, the synthesized set is " +
                shape_text(input_shape) + " (mixed models must share their input shape)");
  const Node& first = m.graph->nodes.at(m.graph->layer_nodes().at(0));
  if (first.kind == OpKind::Conv && first.weight.size(1) * first.conv.groups != C)
    throw Error(method + ": model '" + m.name + "' reads " + std::to_string(first.weight.size(1) * first.conv.groups) +
                " input channels, the synthesized images have " + std::to_string(C));
  at::Tensor logits;
  {
    at::NoGradGuard no_grad;
    logits = h.exec->forward(at::zeros({1, C, H, W}));
  }
  if (classes < 0) {
    classes = logits.size(1);
    first_name = m.name;
  } else if (logits.size(1) != classes) {
    throw Error(method + ": models '" + first_name + "' and '" + m.name + "' predict different numbers of classes (" +
                std::to_string(classes) + " vs " + std::to_string(logits.size(1)) +
                "); mixed models must share their label set");
  }
  return h;
}

// MixMix data mixing of one step: image perm[i], resized, pasted into a random box of image i.
struct Mixing {
  at::Tensor perm;
  double pasted_area = 0;
};

class BnSynthesis {
 public:
  BnSynthesis(const std::vector<SynthesisModel>& models, const std::vector<std::int64_t>& input_shape,
              const BnSynthesisOptions& o)
      : models_(models), o_(o), C_(input_shape[0]), H_(input_shape[1]), W_(input_shape[2]) {
    std::string first_name;
    for (const SynthesisModel& m : models) hooked_.push_back(hook_model(m, input_shape, o.statistics, o.method, classes_, first_name));
    // The parameters are the first model's normalized input; pixels = z·std + mean.
    mean0_ = hooked_[0].norm_mean;
    std0_ = hooked_[0].norm_std;
    z_min_ = (0 - mean0_) / std0_;
    z_max_ = (1 - mean0_) / std0_;
  }

  // Batch b of n images (pixels) and their CE targets (undefined without CE).
  std::pair<at::Tensor, at::Tensor> batch(std::int64_t b, std::int64_t n, std::uint64_t seed, ProgressBar& bar,
                                          std::int64_t batches);
  double last_loss() const { return last_loss_; }

 private:
  at::Tensor loss(const at::Tensor& x, const at::Tensor& z, const at::Tensor& targets, const Mixing& mix) const;
  at::Tensor model_loss(const HookedModel& h, const at::Tensor& x, const at::Tensor& targets, const Mixing& mix) const;

  const std::vector<SynthesisModel>& models_;
  const BnSynthesisOptions& o_;
  std::int64_t C_, H_, W_, classes_ = -1;
  std::vector<HookedModel> hooked_;
  at::Tensor mean0_, std0_, z_min_, z_max_;
  double last_loss_ = 0;
};

// BN-statistic loss (first BN weighted) and CE on the targets (mixed by area under data mixing).
at::Tensor BnSynthesis::model_loss(const HookedModel& h, const at::Tensor& x, const at::Tensor& targets,
                                   const Mixing& mix) const {
  const at::Tensor input = h.model == &models_[0] ? x : ((x * std0_ + mean0_) - h.norm_mean) / h.norm_std;
  const at::Tensor logits = h.exec->forward(input);
  at::Tensor bn_loss = at::zeros({});
  for (std::size_t k = 0; k < h.bn_nodes.size(); ++k) {
    const BatchNormStats& bn = h.model->graph->nodes[h.bn_nodes[k]].bn;
    const at::Tensor l = bn_statistics_loss((*h.captured)[k], o_.statistics, bn.mean, bn.var);
    bn_loss = bn_loss + (k == 0 ? o_.first_bn_multiplier : 1.0) * l;
  }
  at::Tensor out = o_.bn_weight * bn_loss;
  if (targets.defined()) {
    const at::Tensor log_p = at::log_softmax(logits, 1);
    at::Tensor ce_loss = at::nll_loss(log_p, targets);
    if (mix.perm.defined())
      ce_loss = (1 - mix.pasted_area) * ce_loss + mix.pasted_area * at::nll_loss(log_p, targets.index_select(0, mix.perm));
    out = out + o_.ce_weight * ce_loss;
  }
  return out;
}

// Mean over models (MixMix feature mixing), plus ZeroQ's input statistics, TV and l2 priors.
at::Tensor BnSynthesis::loss(const at::Tensor& x, const at::Tensor& z, const at::Tensor& targets, const Mixing& mix) const {
  at::Tensor loss = at::zeros({});
  for (const HookedModel& h : hooked_) loss = loss + model_loss(h, x, targets, mix) / static_cast<double>(hooked_.size());
  if (o_.input_stats_weight > 0) {
    const at::Tensor flat = z.reshape({z.size(0), C_, -1});
    loss = loss + o_.input_stats_weight * (squared_distance_per_sample(at::zeros({C_}, z.options()), flat.mean(2)) +
                                           squared_distance_per_sample(at::ones({C_}, z.options()), at::sqrt(flat.var(2, true) + kZeroqEps)));
  }
  if (o_.tv_l2 > 0) loss = loss + o_.tv_l2 * total_variation_l2(x);
  if (o_.tv_l1 > 0) loss = loss + o_.tv_l1 * total_variation_l1(x);
  if (o_.l2 > 0) loss = loss + o_.l2 * at::norm(x);
  return loss;
}

std::pair<at::Tensor, at::Tensor> BnSynthesis::batch(std::int64_t b, std::int64_t n, std::uint64_t seed, ProgressBar& bar,
                                                     std::int64_t batches) {
  auto gen = at::detail::createCPUGenerator(seed * 1000003ULL + static_cast<std::uint64_t>(b));
  auto randint = [&](std::int64_t lo, std::int64_t hi) { return at::randint(lo, hi + 1, {1}, gen).item<std::int64_t>(); };
  // Drawn on the CPU generator (the same images on any device), optimized where the first model is.
  const c10::Device device = mean0_.device();
  at::Tensor z = at::randn({n, C_, H_, W_}, gen).to(device);
  if (o_.clamp_pixels) z = at::max(at::min(z, z_max_), z_min_);
  z.requires_grad_(true);
  const at::Tensor targets = o_.ce_weight > 0 ? at::randint(classes_, {n}, gen).to(device) : at::Tensor();
  Adam adam({z}, o_.lr, o_.beta1, o_.beta2);
  PlateauSchedule plateau(static_cast<double>(o_.plateau_patience), o_.min_lr);
  const std::int64_t jitter_h = std::llround(o_.jitter * static_cast<double>(H_)),
                     jitter_w = std::llround(o_.jitter * static_cast<double>(W_));
  for (std::int64_t it = 0; it < o_.iterations; ++it) {
    if (o_.lr_schedule == "cosine")
      adam.lr = it < o_.warmup ? o_.lr * static_cast<double>(it + 1) / static_cast<double>(o_.warmup)
                               : cosine_lr(o_.lr, it - o_.warmup, o_.iterations - o_.warmup);
    at::Tensor x = z;
    if (jitter_h > 0 || jitter_w > 0) x = at::roll(x, {randint(-jitter_h, jitter_h), randint(-jitter_w, jitter_w)}, {2, 3});
    if (o_.flips && randint(0, 1) == 1) x = at::flip(x, {3});
    Mixing mix;
    if (o_.data_mixing && n > 1) {
      const double side = o_.mix_min_side + (o_.mix_max_side - o_.mix_min_side) * at::rand({1}, gen).item<double>();
      const std::int64_t bh = std::max<std::int64_t>(1, std::llround(side * static_cast<double>(H_)));
      const std::int64_t bw = std::max<std::int64_t>(1, std::llround(side * static_cast<double>(W_)));
      const std::int64_t y0 = randint(0, H_ - bh), x0 = randint(0, W_ - bw);
      mix.perm = at::randperm(n, gen).to(device);
      x = paste_into_box(x, mix.perm, y0, x0, bh, bw);
      mix.pasted_area = static_cast<double>(bh * bw) / static_cast<double>(H_ * W_);
    }
    const at::Tensor total = loss(x, z, targets, mix);
    total.backward();
    for (HookedModel& h : hooked_)
      for (auto& m : *h.captured) m = BnMoments();  // free this step's activations before the next forward
    last_loss_ = total.item<double>();
    if (!std::isfinite(last_loss_))
      throw Error(o_.method + ": loss became " + std::to_string(last_loss_) + " at iteration " + std::to_string(it) +
                  " of batch " + std::to_string(b) + " (lower lr?)");
    adam.step();
    if (o_.lr_schedule == "plateau") adam.lr = plateau.step(last_loss_, adam.lr);
    if (o_.clamp_pixels) {
      at::NoGradGuard no_grad;
      z.copy_(at::max(at::min(z, z_max_), z_min_));
    }
    if (it % 10 == 9 || it + 1 == o_.iterations) {
      std::ostringstream status;
      status << "batch " << b + 1 << "/" << batches << " loss " << std::setprecision(4) << last_loss_;
      bar.update(b * o_.iterations + it + 1, status.str());
    }
  }
  at::NoGradGuard no_grad;
  return {(z.detach() * std0_ + mean0_).cpu().contiguous(), targets.defined() ? targets.cpu() : targets};
}

}  // namespace

Dataset synthesize_from_bn_statistics(const std::vector<SynthesisModel>& models, const std::vector<std::int64_t>& input_shape,
                                      std::int64_t count, std::uint64_t seed, const BnSynthesisOptions& o,
                                      std::ostream* progress) {
  if (models.empty()) throw Error(o.method + ": no model to synthesize from");
  if (input_shape.size() != 3) throw Error(o.method + ": input shape must be [C, H, W]");
  at::AutoGradMode grad(true);
  BnSynthesis synthesis(models, input_shape, o);
  std::vector<at::Tensor> images, labels;
  const std::int64_t batches = (count + o.batch_size - 1) / o.batch_size;
  ProgressBar bar(progress, o.method + " (" + std::to_string(count) + " images)", batches * o.iterations);
  for (std::int64_t b = 0; b < batches; ++b) {
    auto [batch_images, targets] = synthesis.batch(b, std::min(o.batch_size, count - b * o.batch_size), seed, bar, batches);
    images.push_back(batch_images);
    if (targets.defined()) labels.push_back(targets);
  }
  std::ostringstream status;
  status << "final loss " << std::setprecision(4) << synthesis.last_loss();
  bar.finish(status.str());
  Dataset out{o.method, at::cat(images), {}};
  if (!labels.empty()) out.labels = at::cat(labels);
  return out;
}

}  // namespace xdq

namespace xdq {

BnSynthesisOptions deepinversion_defaults() {
  BnSynthesisOptions d;
  d.statistics = BnStatistics::Batch;
  d.iterations = 2000;
  d.batch_size = 64;
  d.lr = 0.25;
  d.beta1 = 0.5;
  d.beta2 = 0.9;
  d.lr_schedule = "cosine";
  d.warmup = 100;
  d.bn_weight = 0.05;
  d.first_bn_multiplier = 10;
  d.ce_weight = 1;
  d.tv_l2 = 1e-4;
  d.l2 = 1e-5;
  d.jitter = 30.0 / 224.0;
  d.flips = true;
  d.clamp_pixels = true;
  return d;
}

namespace {

// The family's options, each declared once; the schema gives each the default of the family member
// (zeroq, deepinversion, mixmix), kPlain's are placeholders.
const BnSynthesisOptions kPlain;
const Option<std::string> kStatistics =
    OptionSpec::text("statistics", kPlain.statistics == BnStatistics::PerSample ? "per_sample" : "batch",
        "BN statistics matched: per_sample (ZeroQ, over each image's positions) or batch (DeepInversion)")
        .one_of({"per_sample", "batch"});
const Option<std::int64_t> kIterations =
    OptionSpec::integer("iterations", kPlain.iterations, "Adam steps per batch of images").range(1, 1e7);
const Option<std::int64_t> kBatchSize =
    OptionSpec::integer("batch_size", kPlain.batch_size, "images optimized together").range(1, 1 << 16);
const Option<double> kLr =
    OptionSpec::number("lr", kPlain.lr, "Adam learning rate (on the normalized images)").range(0, 100, true);
const Option<double> kBeta1 =
    OptionSpec::number("beta1", kPlain.beta1, "Adam beta1").range(0, 1);
const Option<double> kBeta2 =
    OptionSpec::number("beta2", kPlain.beta2, "Adam beta2").range(0, 1);
const Option<std::string> kLrSchedule =
    OptionSpec::text("lr_schedule", kPlain.lr_schedule, "plateau (ReduceLROnPlateau, x0.1) or cosine (after a linear warm-up)")
        .one_of({"plateau", "cosine"});
const Option<std::int64_t> kPlateauPatience =
    OptionSpec::integer("plateau_patience", kPlain.plateau_patience, "plateau: steps without improvement before x0.1").range(0, 1e7);
const Option<double> kMinLr =
    OptionSpec::number("min_lr", kPlain.min_lr, "plateau: lowest learning rate").range(0, 100);
const Option<std::int64_t> kWarmup =
    OptionSpec::integer("warmup", kPlain.warmup, "cosine: linear warm-up steps").range(0, 1e7);
const Option<double> kBnWeight =
    OptionSpec::number("bn_weight", kPlain.bn_weight, "weight of the BN-statistics loss").range(0, 1e6);
const Option<double> kFirstBnMultiplier =
    OptionSpec::number("first_bn_multiplier", kPlain.first_bn_multiplier, "extra weight of the first BN layer's loss").range(0, 1e6);
const Option<double> kInputStatsWeight =
    OptionSpec::number("input_stats_weight", kPlain.input_stats_weight,
        "weight of the pull of each normalized image to per-channel mean 0, std 1 (ZeroQ)").range(0, 1e6);
const Option<double> kCeWeight =
    OptionSpec::number("ce_weight", kPlain.ce_weight, "weight of the cross-entropy on random target labels (0: no labels)").range(0, 1e6);
const Option<double> kTvL2 =
    OptionSpec::number("tv_l2", kPlain.tv_l2, "weight of the l2 total-variation prior").range(0, 1e6);
const Option<double> kTvL1 =
    OptionSpec::number("tv_l1", kPlain.tv_l1, "weight of the l1 total-variation prior").range(0, 1e6);
const Option<double> kL2 =
    OptionSpec::number("l2", kPlain.l2, "weight of the l2 norm of the images").range(0, 1e6);
const Option<double> kJitter =
    OptionSpec::number("jitter", kPlain.jitter, "random roll per step, fraction of the side (DeepInversion: 30 px at 224)").range(0, 0.5);
const Option<bool> kFlips =
    OptionSpec::flag("flips", kPlain.flips, "random horizontal flip per step");
const Option<bool> kClamp =
    OptionSpec::flag("clamp", kPlain.clamp_pixels, "keep pixels in [0, 1] after every step");
const Option<bool> kDataMixing =
    OptionSpec::flag("data_mixing", kPlain.data_mixing, "MixMix data mixing: paste a resized image into a box of another");
const Option<double> kMixMinSide =
    OptionSpec::number("mix_min_side", kPlain.mix_min_side, "data mixing: smallest box side (fraction of the image)").range(0, 1, true);
const Option<double> kMixMaxSide =
    OptionSpec::number("mix_max_side", kPlain.mix_max_side, "data mixing: largest box side (fraction of the image)").range(0, 1, true);
const Option<bool> kFeatureMixing =
    OptionSpec::flag("feature_mixing", kPlain.feature_mixing,
        "MixMix feature mixing: average the loss over every model the domain lists (else one model)");

}  // namespace

OptionSchema bn_synthesis_schema(const BnSynthesisOptions& d) {
  return {
      kStatistics.spec(d.statistics == BnStatistics::PerSample ? "per_sample" : "batch"),
      kIterations.spec(d.iterations),
      kBatchSize.spec(d.batch_size),
      kLr.spec(d.lr),
      kBeta1.spec(d.beta1),
      kBeta2.spec(d.beta2),
      kLrSchedule.spec(d.lr_schedule),
      kPlateauPatience.spec(d.plateau_patience),
      kMinLr.spec(d.min_lr),
      kWarmup.spec(d.warmup),
      kBnWeight.spec(d.bn_weight),
      kFirstBnMultiplier.spec(d.first_bn_multiplier),
      kInputStatsWeight.spec(d.input_stats_weight),
      kCeWeight.spec(d.ce_weight),
      kTvL2.spec(d.tv_l2),
      kTvL1.spec(d.tv_l1),
      kL2.spec(d.l2),
      kJitter.spec(d.jitter),
      kFlips.spec(d.flips),
      kClamp.spec(d.clamp_pixels),
      kDataMixing.spec(d.data_mixing),
      kMixMinSide.spec(d.mix_min_side),
      kMixMaxSide.spec(d.mix_max_side),
      kFeatureMixing.spec(d.feature_mixing),
  };
}

BnSynthesisOptions bn_synthesis_options(const Options& o, const std::string& method) {
  BnSynthesisOptions r;
  r.method = method;
  r.statistics = kStatistics(o) == "per_sample" ? BnStatistics::PerSample : BnStatistics::Batch;
  r.iterations = kIterations(o);
  r.batch_size = kBatchSize(o);
  r.lr = kLr(o);
  r.beta1 = kBeta1(o);
  r.beta2 = kBeta2(o);
  r.lr_schedule = kLrSchedule(o);
  r.plateau_patience = kPlateauPatience(o);
  r.min_lr = kMinLr(o);
  r.warmup = kWarmup(o);
  r.bn_weight = kBnWeight(o);
  r.first_bn_multiplier = kFirstBnMultiplier(o);
  r.input_stats_weight = kInputStatsWeight(o);
  r.ce_weight = kCeWeight(o);
  r.tv_l2 = kTvL2(o);
  r.tv_l1 = kTvL1(o);
  r.l2 = kL2(o);
  r.jitter = kJitter(o);
  r.flips = kFlips(o);
  r.clamp_pixels = kClamp(o);
  r.data_mixing = kDataMixing(o);
  r.mix_min_side = kMixMinSide(o);
  r.mix_max_side = kMixMaxSide(o);
  r.feature_mixing = kFeatureMixing(o);
  if (r.mix_min_side > r.mix_max_side) throw Error(method + ": mix_min_side is above mix_max_side");
  if (r.data_mixing && r.ce_weight == 0)
    throw Error(method + ": data_mixing mixes the target labels; it needs ce_weight > 0");
  if (r.lr_schedule == "cosine" && r.warmup >= r.iterations)
    throw Error(method + ": warmup (" + std::to_string(r.warmup) + ") must be below iterations (" +
                std::to_string(r.iterations) + ")");
  return r;
}

Dataset BnSynthesizer::synthesize(const SynthesisContext& context) const {
  if (context.models.size() > 1 && !options_.feature_mixing)
    throw Error(options_.method + " synthesizes from one model, the domain lists " + std::to_string(context.models.size()) +
                " (mixing several models is MixMix's feature mixing: feature_mixing: true)");
  return synthesize_from_bn_statistics(context.models, context.input_shape, context.count, context.seed, options_,
                                       context.progress);
}

}  // namespace xdq
