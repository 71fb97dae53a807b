// The elementwise functions of the reconstruction loop: AdaRound's soft rounding of weights, LSQ's learned
// activation step with QDrop's random dropping, and the counter-based draws that dropping uses. The
// activation quantizer runs on every activation inside a unit at every iteration, so on the CPU it is one
// pass forward and one backward (composed of ATen ops it took eight passes each way and the draws a serial
// generator: QDrop iterations cost 4.6 plain forward + backward passes of the block).
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <mutex>

#include "xdq/quant/reconstruction.h"

namespace xdq {

namespace {

constexpr double kZeta = 1.1, kGamma = -0.1;

// A 32-bit hash of (key, index) (Wellons' lowbias32 finalizer over the index spread by the golden ratio and
// the key's two halves): 32-bit multiplies and shifts, which vectorize. Indices wrap at 2^32 elements.
inline std::uint32_t draw_hash(std::uint64_t key, std::int64_t index) {
  std::uint32_t v = static_cast<std::uint32_t>(index) * 0x9E3779B9u + static_cast<std::uint32_t>(key);
  v ^= static_cast<std::uint32_t>(key >> 32);
  v ^= v >> 16;
  v *= 0x7FEB352Du;
  v ^= v >> 15;
  v *= 0x846CA68Bu;
  return v ^ (v >> 16);
}

// Uniform in [0, 1) from the top 24 bits: exactly representable in float32.
inline float uniform_draw(std::uint64_t key, std::int64_t index) {
  return static_cast<float>(draw_hash(key, index) >> 8) * 0x1p-24f;
}

// Memory of a float32 tensor read in order, with each element's logical (row-major NCHW) index: contiguous
// tensors as they are, 4-D channels-last ones ([N, H, W, C] in memory) too; anything else made contiguous.
struct LogicalIndex {
  bool channels_last = false;
  std::int64_t C = 1, H = 1, W = 1;
  explicit LogicalIndex(const at::Tensor& t) {
    channels_last = t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast);
    if (channels_last) C = t.size(1), H = t.size(2), W = t.size(3);
  }
  // f(p, logical index of p) for memory positions p in [begin, end); a channels-last position is decoded once
  // per run of C channels.
  template <class F>
  void walk(std::int64_t begin, std::int64_t end, F&& f) const {
    if (!channels_last) {
      for (std::int64_t p = begin; p < end; ++p) f(p, p);
      return;
    }
    for (std::int64_t p = begin; p < end;) {
      const std::int64_t pixel = p / C, w = pixel % W, h = (pixel / W) % H, n = pixel / (W * H);
      const std::int64_t stop = std::min(end, (pixel + 1) * C);
      for (std::int64_t logical = ((n * C + p % C) * H + h) * W + w; p < stop; ++p, logical += H * W) f(p, logical);
    }
  }
};

at::Tensor dense(const at::Tensor& t) {
  return LogicalIndex(t).channels_last ? t : t.contiguous();
}

// `t` in memory laid out as `like` (same strides), for kernels that walk both together.
at::Tensor laid_out_as(const at::Tensor& t, const at::Tensor& like) {
  if (t.strides() == like.strides()) return t;
  at::Tensor out = at::empty_like(like);
  out.copy_(t);
  return out;
}

// The quantizer's constants, as the ATen composite computes them (float32): codes relative to the zero
// point lie in [lo, hi] = [qmin - z, qmax - z].
struct Grid {
  float scale, lo, hi;
  double drop;
  std::uint64_t key;
};

constexpr std::int64_t kGrain = 1 << 14;  // fixed chunks: the step's gradient sums in the same order on any thread count

// Rounds half to even as at::round, branch-free (std::nearbyint is a library call here): exact for
// |y| < 2^22, which the clamp to one step beyond the grid guarantees.
inline float round_on_grid(float y, const Grid& g) {
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23
  const float clamped = std::min(std::max(y, g.lo - 1.0f), g.hi + 1.0f);
  return (clamped + kRound) - kRound;
}

// Runs body(begin, end, draws) over fixed chunks of n elements in parallel; `draws` holds each element's
// uniform draw when dropping (else it is null), so the body's loop has no branch to mispredict and
// vectorizes.
template <class Body>
void for_each_chunk(std::int64_t n, const Grid& g, const LogicalIndex& index, Body&& body) {
  const std::int64_t chunks = (n + kGrain - 1) / kGrain;
  at::parallel_for(0, chunks, 1, [&](std::int64_t first, std::int64_t last) {
    std::vector<float> draws(g.drop > 0 ? kGrain : 0);
    const std::uint64_t key = g.key;
    float* d = draws.data();
    for (std::int64_t k = first; k < last; ++k) {
      const std::int64_t begin = k * kGrain, end = std::min(n, begin + kGrain);
      if (g.drop > 0)
        index.walk(begin, end, [&](std::int64_t p, std::int64_t logical) { d[p - begin] = uniform_draw(key, logical); });
      body(k, begin, end, g.drop > 0 ? draws.data() - begin : nullptr);
    }
  });
}

// out[p] = x[p] kept (dropped from quantization) or fake-quantized.
void lsq_forward_cpu(const float* x, float* out, std::int64_t n, const Grid& grid, const LogicalIndex& index) {
  const Grid g = grid;  // locals: the compiler need not reload them after each store
  const float drop = static_cast<float>(g.drop);
  auto quantized = [&](float v) { return std::min(std::max(round_on_grid(v / g.scale, g), g.lo), g.hi) * g.scale; };
  for_each_chunk(n, g, index, [&](std::int64_t, std::int64_t begin, std::int64_t end, const float* draws) {
    if (draws)
      for (std::int64_t p = begin; p < end; ++p) {
        const float xq = quantized(x[p]);
        out[p] = draws[p] < drop ? x[p] : xq;
      }
    else
      for (std::int64_t p = begin; p < end; ++p) out[p] = quantized(x[p]);
  });
}

// Over [begin, end): dL/dx (straight-through inside the grid, 0 outside, 1 where dropped) and the sum of
// dL/d out · d out/d scale, whose term is code - y inside the grid and the nearer grid end outside:
// clamped - inside · y. Eight interleaved double sums: the loop vectorizes.
template <bool Dropping>
double lsq_backward_range(const float* x, const float* grad, float* grad_x, std::int64_t begin, std::int64_t end,
                          const Grid& g, const float* draws) {
  constexpr int kLanes = 8;
  const float drop = static_cast<float>(g.drop);
  double lanes[kLanes] = {};
  auto element = [&](std::int64_t p, double& lane) {
    const float y = x[p] / g.scale, code = round_on_grid(y, g);
    const float clamped = std::min(std::max(code, g.lo), g.hi);
    const float inside = code == clamped ? 1.0f : 0.0f;
    const float quantized = Dropping ? (draws[p] < drop ? 0.0f : 1.0f) : 1.0f;
    if (grad_x) grad_x[p] = grad[p] * (1.0f - quantized * (1.0f - inside));
    lane += static_cast<double>(quantized * grad[p] * (clamped - inside * y));
  };
  std::int64_t p = begin;
  for (; p + kLanes <= end; p += kLanes)
    for (int l = 0; l < kLanes; ++l) element(p + l, lanes[l]);
  for (; p < end; ++p) element(p, lanes[0]);
  double sum = 0;
  for (double v : lanes) sum += v;
  return sum;
}

double lsq_backward_cpu(const float* x, const float* grad, float* grad_x, std::int64_t n, const Grid& grid,
                        const LogicalIndex& index) {
  const Grid g = grid;
  std::vector<double> partial((n + kGrain - 1) / kGrain, 0.0);
  for_each_chunk(n, g, index, [&](std::int64_t k, std::int64_t begin, std::int64_t end, const float* draws) {
    partial[k] = draws ? lsq_backward_range<true>(x, grad, grad_x, begin, end, g, draws)
                       : lsq_backward_range<false>(x, grad, grad_x, begin, end, g, nullptr);
  });
  double total = 0;
  for (double v : partial) total += v;
  return total;
}

struct FusedLsq : public torch::autograd::Function<FusedLsq> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x_in,
                                                const at::Tensor& scale, Grid grid, double grad_factor) {
    const at::Tensor x = dense(x_in);
    grid.scale = scale.item<float>();
    at::Tensor out = at::empty_like(x);
    lsq_forward_cpu(x.data_ptr<float>(), out.data_ptr<float>(), x.numel(), grid, LogicalIndex(x));
    ctx->save_for_backward({x, scale});
    ctx->saved_data["lo"] = static_cast<double>(grid.lo);
    ctx->saved_data["hi"] = static_cast<double>(grid.hi);
    ctx->saved_data["drop"] = grid.drop;
    ctx->saved_data["key"] = static_cast<std::int64_t>(grid.key);
    ctx->saved_data["factor"] = grad_factor;
    return {out};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &scale = saved[1];
    const Grid grid{scale.item<float>(), static_cast<float>(ctx->saved_data["lo"].toDouble()),
                    static_cast<float>(ctx->saved_data["hi"].toDouble()), ctx->saved_data["drop"].toDouble(),
                    static_cast<std::uint64_t>(ctx->saved_data["key"].toInt())};
    const at::Tensor grad = laid_out_as(grads[0], x);
    at::Tensor grad_x = ctx->needs_input_grad(0) ? at::empty_like(x) : at::Tensor();
    const double sum = lsq_backward_cpu(x.data_ptr<float>(), grad.data_ptr<float>(),
                                        grad_x.defined() ? grad_x.data_ptr<float>() : nullptr, x.numel(), grid,
                                        LogicalIndex(x));
    const at::Tensor grad_scale = at::full_like(scale, sum * ctx->saved_data["factor"].toDouble());
    return {grad_x, grad_scale, at::Tensor(), at::Tensor()};
  }
};

// AdaRound's soft rounding of one layer on the CPU: per element e of channel k (axis 0), with
// h = clamp(σ(v)(ζ - γ) + γ, 0, 1): W̃ = (clamp(floor(W/s_k) + z_k + h, qmin, qmax) - z_k)·s_k and, when beta > 0,
// R = Σ 1 - |2h - 1|^β. Backward: dv = (dW̃·s_k·[grid inside] + dR·dR/dh)·dh/dv, each clamp passing its
// gradient on its closed interval as ATen's does.
struct SoftRoundingConstants {
  at::Tensor weight, scale, zero;  // weight contiguous; scale, zero float32 per output channel (or one)
  float qmin, qmax, beta;
};

inline float rounding_h(float v, float& dh_dv) {
  const float sig = 1.0f / (1.0f + std::exp(-v));
  const float raw = sig * static_cast<float>(kZeta - kGamma) + static_cast<float>(kGamma);
  dh_dv = raw >= 0.0f && raw <= 1.0f ? static_cast<float>(kZeta - kGamma) * sig * (1.0f - sig) : 0.0f;
  return std::min(std::max(raw, 0.0f), 1.0f);
}

struct FusedSoftRounding : public torch::autograd::Function<FusedSoftRounding> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& v_in,
                                                SoftRoundingConstants k) {
    const at::Tensor v = v_in.contiguous();
    const std::int64_t n = v.numel(), per_channel = n / k.scale.numel();
    at::Tensor out = at::empty_like(v);
    const float *vd = v.data_ptr<float>(), *w = k.weight.data_ptr<float>(), *s = k.scale.data_ptr<float>(),
                *z = k.zero.data_ptr<float>();
    float* o = out.data_ptr<float>();
    std::vector<double> partial(k.scale.numel(), 0.0);
    at::parallel_for(0, k.scale.numel(), 1, [&](std::int64_t first, std::int64_t last) {
      for (std::int64_t c = first; c < last; ++c) {
        double reg = 0;
        for (std::int64_t e = c * per_channel; e < (c + 1) * per_channel; ++e) {
          float dh_dv;
          const float h = rounding_h(vd[e], dh_dv);
          const float grid = std::floor(w[e] / s[c]) + z[c] + h;
          o[e] = (std::min(std::max(grid, k.qmin), k.qmax) - z[c]) * s[c];
          if (k.beta > 0) reg += 1.0 - std::pow(std::fabs(2.0f * h - 1.0f), k.beta);
        }
        partial[c] = reg;
      }
    });
    double regularizer = 0;
    for (double r : partial) regularizer += r;
    ctx->save_for_backward({v, k.weight, k.scale, k.zero});
    ctx->saved_data["qmin"] = static_cast<double>(k.qmin);
    ctx->saved_data["qmax"] = static_cast<double>(k.qmax);
    ctx->saved_data["beta"] = static_cast<double>(k.beta);
    return {out, at::full({}, regularizer, v.options())};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &v = saved[0], &weight = saved[1], &scale = saved[2], &zero = saved[3];
    const float qmin = static_cast<float>(ctx->saved_data["qmin"].toDouble()),
                qmax = static_cast<float>(ctx->saved_data["qmax"].toDouble()),
                beta = static_cast<float>(ctx->saved_data["beta"].toDouble());
    const at::Tensor grad_w = grads[0].defined() ? grads[0].contiguous() : at::zeros_like(v);
    const float grad_r = grads[1].defined() && beta > 0 ? grads[1].item<float>() : 0.0f;
    at::Tensor grad_v = at::empty_like(v);
    const std::int64_t per_channel = v.numel() / scale.numel();
    const float *vd = v.data_ptr<float>(), *w = weight.data_ptr<float>(), *s = scale.data_ptr<float>(),
                *z = zero.data_ptr<float>(), *gw = grad_w.data_ptr<float>();
    float* gv = grad_v.data_ptr<float>();
    at::parallel_for(0, scale.numel(), 1, [&](std::int64_t first, std::int64_t last) {
      for (std::int64_t c = first; c < last; ++c)
        for (std::int64_t e = c * per_channel; e < (c + 1) * per_channel; ++e) {
          float dh_dv;
          const float h = rounding_h(vd[e], dh_dv);
          const float grid = std::floor(w[e] / s[c]) + z[c] + h;
          float dh = grid >= qmin && grid <= qmax ? gw[e] * s[c] : 0.0f;
          if (grad_r != 0.0f) {
            const float d = 2.0f * h - 1.0f;  // d/dh of 1 - |d|^β is -2β|d|^(β-1) sign(d)
            const float sign = d > 0.0f ? 1.0f : (d < 0.0f ? -1.0f : 0.0f);
            dh -= grad_r * 2.0f * beta * std::pow(std::fabs(d), beta - 1.0f) * sign;
          }
          gv[e] = dh * dh_dv;
        }
    });
    return {grad_v, at::Tensor()};
  }
};

}  // namespace

at::Tensor rectified_sigmoid(const at::Tensor& v) { return (at::sigmoid(v) * (kZeta - kGamma) + kGamma).clamp(0, 1); }

namespace {
// Scale and zero point shaped to broadcast over `weight` (per-channel along axis 0).
std::pair<at::Tensor, at::Tensor> broadcast_qparams(const at::Tensor& weight, const QParams& q) {
  at::Tensor s = q.scale.to(weight.device(), at::kFloat), z = q.zero_point.to(weight.device(), at::kFloat);
  if (q.per_channel()) {
    std::vector<std::int64_t> shape(weight.dim(), 1);
    shape[q.axis] = -1;
    s = s.view(shape);
    z = z.view(shape);
  }
  return {s, z};
}
}  // namespace

at::Tensor initial_rounding_logits(const at::Tensor& weight, const QParams& q) {
  const auto [s, z] = broadcast_qparams(weight, q);
  const at::Tensor scaled = weight.detach() / s;
  const at::Tensor frac = scaled - at::floor(scaled);
  return -at::log((kZeta - kGamma) / (frac - kGamma) - 1);
}

at::Tensor soft_quantized_weight(const at::Tensor& weight, const QParams& q, const at::Tensor& h) {
  const auto [s, z] = broadcast_qparams(weight, q);
  const at::Tensor grid = at::floor(weight.detach() / s) + z + h;
  return (grid.clamp(static_cast<double>(q.qmin), static_cast<double>(q.qmax)) - z) * s;
}

SoftRounding soft_rounding(const at::Tensor& v, const at::Tensor& weight, const QParams& q, double beta) {
  const bool fused = v.is_cpu() && v.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat &&
                     (!q.per_channel() || q.axis == 0);
  if (fused) {
    const SoftRoundingConstants k{weight.detach().contiguous(), q.scale.to(at::kFloat).contiguous().view({-1}),
                                  q.zero_point.to(at::kFloat).contiguous().view({-1}), static_cast<float>(q.qmin),
                                  static_cast<float>(q.qmax), static_cast<float>(beta)};
    const auto out = FusedSoftRounding::apply(v, k);
    return {out[0], beta > 0 ? out[1] : at::Tensor()};
  }
  const at::Tensor h = rectified_sigmoid(v);
  return {soft_quantized_weight(weight, q, h), beta > 0 ? (1 - (2 * h - 1).abs().pow(beta)).sum() : at::Tensor()};
}

std::uint64_t next_draw_key(at::Generator& gen) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get<at::CPUGeneratorImpl>()->random64();
}

at::Tensor uniform_draws(const at::Tensor& like, std::uint64_t key) {
  at::Tensor out = at::empty(like.sizes(), like.options().device(at::kCPU).dtype(at::kFloat), like.suggest_memory_format());
  float* d = out.data_ptr<float>();
  const LogicalIndex index(out);
  at::parallel_for(0, out.numel(), kGrain, [&](std::int64_t begin, std::int64_t end) {
    index.walk(begin, end, [&](std::int64_t p, std::int64_t logical) { d[p] = uniform_draw(key, logical); });
  });
  return out.to(like.device());
}

at::Tensor lsq_fake_quantize(const at::Tensor& x, const at::Tensor& scale, const QParams& q, double grad_factor,
                             double drop_prob, std::uint64_t key) {
  const double z = q.zero_point.item<double>();
  if (x.is_cpu() && x.scalar_type() == at::kFloat && scale.scalar_type() == at::kFloat)
    return FusedLsq::apply(x, scale,
                           Grid{0.0f, static_cast<float>(q.qmin - z), static_cast<float>(q.qmax - z), drop_prob, key},
                           grad_factor)[0];
  // Elsewhere, composed of ATen ops: the gradient of the step scaled through s = (scale - f·scale) + f·scale.
  const at::Tensor s = grad_factor == 1.0 ? scale : (scale - scale * grad_factor).detach() + scale * grad_factor;
  const at::Tensor y = x / s;
  const at::Tensor rounded = (at::round(y) - y).detach() + y;
  const at::Tensor xq = ((rounded + z).clamp(static_cast<double>(q.qmin), static_cast<double>(q.qmax)) - z) * s;
  return drop_prob > 0 ? at::where(uniform_draws(x, key) < drop_prob, x, xq) : xq;
}

}  // namespace xdq
