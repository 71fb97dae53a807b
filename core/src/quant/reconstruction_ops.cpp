// The elementwise functions of the reconstruction loop: AdaRound's soft rounding of weights, LSQ's learned
// activation step with QDrop's random dropping, QDrop's mixing of the unit input, the reconstruction loss,
// and the counter-based draws that dropping uses. They run on every activation of a unit at every
// iteration, so on the CPU each is one pass forward and one backward, compiled per instruction set
// (composed of ATen ops the quantizer took eight passes each way, the loss six, the mixing a where that
// alone cost a sixth of a convolution, and the draws a serial generator: QDrop iterations cost 4.6 plain
// forward + backward passes of the block).
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <cstring>
#include <mutex>

#include "xdq/error.h"
#include "xdq/quant/reconstruction.h"
#include "../vector_clones.h"
#include "../vector_math.h"

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
  // f(p, logical index of p) for memory positions p in [begin, end); a channels-last position is decoded
  // once, then the pixel is stepped. A pixel's channels in whole blocks of 16 go through a loop of fixed
  // length, which compiles to straight vector code (a loop of C iterations pays its set-up per pixel).
  template <class F>
  [[gnu::always_inline]] inline void walk(std::int64_t begin, std::int64_t end, F&& f) const {
    if (!channels_last) {
      for (std::int64_t p = begin; p < end; ++p) f(p, p);
      return;
    }
    constexpr std::int64_t kBlock = 16;
    const std::int64_t pixel = begin / C, step = H * W;
    std::int64_t c = begin % C, w = pixel % W, h = (pixel / W) % H, n = pixel / (W * H);
    for (std::int64_t p = begin; p < end; c = 0) {
      const std::int64_t stop = std::min(end, p + (C - c));
      std::int64_t logical = ((n * C + c) * H + h) * W + w;
      if ((stop - p) % kBlock == 0)
        for (; p < stop; p += kBlock, logical += kBlock * step)
          for (std::int64_t b = 0; b < kBlock; ++b) f(p + b, logical + b * step);
      else
        for (; p < stop; ++p, logical += step) f(p, logical);
      if (++w == W) {
        w = 0;
        if (++h == H) h = 0, ++n;
      }
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
struct StepGrid {
  float scale, lo, hi;
  double drop;
  std::uint64_t key;
};

constexpr std::int64_t kGrain = 1 << 14;  // fixed chunks: the step's gradient sums in the same order on any thread count

// Rounds half to even as at::round, branch-free (std::nearbyint is a library call here): exact for
// |y| < 2^22, which the clamp to one step beyond the grid guarantees.
inline float round_on_grid(float y, const StepGrid& g) {
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23
  const float clamped = std::min(std::max(y, g.lo - 1.0f), g.hi + 1.0f);
  return (clamped + kRound) - kRound;
}

// d[p - begin] = the uniform draw of memory position p, for p in [begin, end).
XDQ_VECTOR_CLONES void fill_draws(float* d, std::int64_t begin, std::int64_t end, const LogicalIndex& index,
                                  std::uint64_t key) {
  index.walk(begin, end, [&](std::int64_t p, std::int64_t logical) { d[p - begin] = uniform_draw(key, logical); });
}

// Runs f(k, begin, end) over the fixed chunks k of n elements, in parallel.
template <class F>
void for_each_chunk(std::int64_t n, F&& f) {
  at::parallel_for(0, (n + kGrain - 1) / kGrain, 1, [&](std::int64_t first, std::int64_t last) {
    for (std::int64_t k = first; k < last; ++k) f(k, k * kGrain, std::min(n, (k + 1) * kGrain));
  });
}

// Σ f(begin, end) over the fixed chunks of n elements, added in chunk order: the same on any thread count.
template <class F>
double sum_over_chunks(std::int64_t n, F&& f) {
  std::vector<double> partial((n + kGrain - 1) / kGrain, 0.0);
  for_each_chunk(n, [&](std::int64_t k, std::int64_t begin, std::int64_t end) { partial[k] = f(begin, end); });
  double total = 0;
  for (double v : partial) total += v;
  return total;
}

// A chunk's uniform draws in `buffer` (kGrain floats) when dropping, else null: the loops that read them
// then have no branch to mispredict.
const float* chunk_draws(const StepGrid& g, const LogicalIndex& index, std::int64_t begin, std::int64_t end, float* buffer) {
  if (g.drop <= 0) return nullptr;
  fill_draws(buffer, begin, end, index, g.key);
  return buffer;
}

// Σ term(i) over [begin, end) in kLanes interleaved double sums, added in a fixed order: the loop
// vectorizes and keeps enough independent additions in flight (8 lanes waited on each addition's latency).
template <class Term>
[[gnu::always_inline]] inline double lane_sum(std::int64_t begin, std::int64_t end, Term&& term) {
  constexpr int kLanes = 16;
  double lanes[kLanes] = {};
  std::int64_t i = begin;
  for (; i + kLanes <= end; i += kLanes)
    for (int l = 0; l < kLanes; ++l) lanes[l] += static_cast<double>(term(i + l));
  for (; i < end; ++i) lanes[0] += static_cast<double>(term(i));
  double sum = 0;
  for (double v : lanes) sum += v;
  return sum;
}

// out[p] = x[p] kept (dropped from quantization: draws[p - begin] < drop) or fake-quantized, p in [begin, end).
XDQ_VECTOR_CLONES void lsq_forward_range(const float* x, float* out, std::int64_t begin, std::int64_t end,
                                         const StepGrid g, const float* draws) {
  const float drop = static_cast<float>(g.drop);
  auto quantized = [&](float v) { return std::min(std::max(round_on_grid(v / g.scale, g), g.lo), g.hi) * g.scale; };
  if (draws)
    for (std::int64_t p = begin; p < end; ++p) {
      const float xq = quantized(x[p]);
      out[p] = draws[p - begin] < drop ? x[p] : xq;
    }
  else
    for (std::int64_t p = begin; p < end; ++p) out[p] = quantized(x[p]);
}

// Over [begin, end): dL/dx (straight-through inside the grid, 0 outside, 1 where dropped) and each element's
// term of dL/d out · d out/d scale, code - y inside the grid and the nearer grid end outside:
// clamped - inside · y, into buffer[p - begin]. Dropping, buffer[p - begin] holds 1 where the forward kept
// x[p], else 0, on the way in (each element is read before its term is written over it).
template <bool Dropping, bool WithGradX>
[[gnu::always_inline]] inline void lsq_backward_terms(const float* x, const float* grad, float* grad_x,
                                                      std::int64_t begin, std::int64_t end, const StepGrid& g,
                                                      float* buffer) {
  for (std::int64_t p = begin; p < end; ++p) {
    const float y = x[p] / g.scale, code = round_on_grid(y, g);
    const float clamped = std::min(std::max(code, g.lo), g.hi);
    const float inside = code == clamped ? 1.0f : 0.0f;
    const float quantized = Dropping ? 1.0f - buffer[p - begin] : 1.0f;
    if (WithGradX) grad_x[p] = grad[p] * (1.0f - quantized * (1.0f - inside));
    buffer[p - begin] = quantized * grad[p] * (clamped - inside * y);
  }
}

// The step's gradient over [begin, end) (at most kGrain elements; `buffer` holds kGrain floats and, when
// dropping, the forward's decisions as floats) and dL/dx. The terms are summed in a second pass: summed
// in the loop that also stores dL/dx, GCC kept the running sums in memory, each addition waiting on the
// store of the last (the quantizer's backward took 13-15 % longer).
XDQ_VECTOR_CLONES double lsq_backward_range(const float* x, const float* grad, float* grad_x, std::int64_t begin,
                                            std::int64_t end, const StepGrid g, bool dropping, float* buffer) {
  if (dropping)
    grad_x ? lsq_backward_terms<true, true>(x, grad, grad_x, begin, end, g, buffer)
           : lsq_backward_terms<true, false>(x, grad, grad_x, begin, end, g, buffer);
  else
    grad_x ? lsq_backward_terms<false, true>(x, grad, grad_x, begin, end, g, buffer)
           : lsq_backward_terms<false, false>(x, grad, grad_x, begin, end, g, buffer);
  return lane_sum(0, end - begin, [&](std::int64_t i) { return buffer[i]; });
}

// The forward's decisions as bytes (1: x kept) and back as floats, for the backward: replaying them costs
// far less than drawing again (the hash takes about 11 cycles per 16 draws), and bytes keep the saved
// copy a quarter of the activation's size. Separate loops: mixed with the float arithmetic of the
// quantizer's loops, the byte loads made GCC vectorize those four floats wide.
XDQ_VECTOR_CLONES void record_kept(const float* draws, std::uint8_t* kept, std::int64_t n, float drop) {
  for (std::int64_t i = 0; i < n; ++i) kept[i] = draws[i] < drop ? 1 : 0;
}
XDQ_VECTOR_CLONES void kept_as_floats(const std::uint8_t* kept, float* out, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(kept[i]);
}

// kept: with dropping, one byte per element for the backward.
void lsq_forward_cpu(const float* x, float* out, std::uint8_t* kept, std::int64_t n, const StepGrid& g,
                     const LogicalIndex& index) {
  for_each_chunk(n, [&](std::int64_t, std::int64_t begin, std::int64_t end) {
    float buffer[kGrain];
    const float* draws = chunk_draws(g, index, begin, end, buffer);
    lsq_forward_range(x, out, begin, end, g, draws);
    if (draws) record_kept(draws, kept + begin, end - begin, static_cast<float>(g.drop));
  });
}

// kept: the forward's bytes, or null without dropping.
double lsq_backward_cpu(const float* x, const float* grad, float* grad_x, const std::uint8_t* kept, std::int64_t n,
                        const StepGrid& g) {
  return sum_over_chunks(n, [&](std::int64_t begin, std::int64_t end) {
    float buffer[kGrain];
    if (kept) kept_as_floats(kept + begin, buffer, end - begin);
    return lsq_backward_range(x, grad, grad_x, begin, end, g, kept != nullptr, buffer);
  });
}

struct FusedLsq : public torch::autograd::Function<FusedLsq> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x_in,
                                                const at::Tensor& scale, StepGrid grid, double grad_factor) {
    const at::Tensor x = dense(x_in);
    grid.scale = scale.item<float>();
    at::Tensor out = at::empty_like(x);
    const at::Tensor kept = grid.drop > 0 ? at::empty({x.numel()}, x.options().dtype(at::kByte)) : at::Tensor();
    lsq_forward_cpu(x.data_ptr<float>(), out.data_ptr<float>(), kept.defined() ? kept.data_ptr<std::uint8_t>() : nullptr,
                    x.numel(), grid, LogicalIndex(x));
    ctx->save_for_backward({x, scale, kept});
    ctx->saved_data["lo"] = static_cast<double>(grid.lo);
    ctx->saved_data["hi"] = static_cast<double>(grid.hi);
    ctx->saved_data["factor"] = grad_factor;
    return {out};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &scale = saved[1], &kept = saved[2];
    const StepGrid grid{scale.item<float>(), static_cast<float>(ctx->saved_data["lo"].toDouble()),
                    static_cast<float>(ctx->saved_data["hi"].toDouble()), 0.0, 0};  // no draws: kept replays them
    const at::Tensor grad = laid_out_as(grads[0], x);
    at::Tensor grad_x = ctx->needs_input_grad(0) ? at::empty_like(x) : at::Tensor();
    const double sum = lsq_backward_cpu(x.data_ptr<float>(), grad.data_ptr<float>(),
                                        grad_x.defined() ? grad_x.data_ptr<float>() : nullptr,
                                        kept.defined() ? kept.data_ptr<std::uint8_t>() : nullptr, x.numel(), grid);
    const at::Tensor grad_scale = at::full_like(scale, sum * ctx->saved_data["factor"].toDouble());
    return {grad_x, grad_scale, at::Tensor(), at::Tensor()};
  }
};

// The reconstruction loss Σ w²·|out - target|^p on the CPU: one pass forward (double sums over fixed
// chunks), one backward. Composed of ATen ops it was six passes over the unit's output.
template <bool Weighted, bool Square>
[[gnu::always_inline]] inline double error_sum_lanes(const float* out, const float* target, const float* weight,
                                                     std::int64_t begin, std::int64_t end, float p) {
  return lane_sum(begin, end, [&](std::int64_t i) {
    const float e = out[i] - target[i];
    const float v = Square ? e * e : std::pow(std::fabs(e), p);
    return Weighted ? v * (weight[i] * weight[i]) : v;
  });
}

XDQ_VECTOR_CLONES double error_sum_range(const float* out, const float* target, const float* weight,
                                         std::int64_t begin, std::int64_t end, float p) {
  if (p == 2.0f)
    return weight ? error_sum_lanes<true, true>(out, target, weight, begin, end, p)
                  : error_sum_lanes<false, true>(out, target, weight, begin, end, p);
  return weight ? error_sum_lanes<true, false>(out, target, weight, begin, end, p)
                : error_sum_lanes<false, false>(out, target, weight, begin, end, p);
}

// d/d out of g·w²·|e|^p: g·w²·2e, or g·w²·p|e|^(p-1)·sign(e) (0 at e = 0, as ATen's abs passes it).
XDQ_VECTOR_CLONES void error_grad_range(const float* out, const float* target, const float* weight, float* grad,
                                        std::int64_t begin, std::int64_t end, float p, float g) {
  for (std::int64_t i = begin; i < end; ++i) {
    const float e = out[i] - target[i];
    const float sign = e > 0.0f ? 1.0f : (e < 0.0f ? -1.0f : 0.0f);
    const float d = p == 2.0f ? 2.0f * e : p * std::pow(std::fabs(e), p - 1.0f) * sign;
    grad[i] = weight ? g * (weight[i] * weight[i]) * d : g * d;
  }
}

// The constants of the loss, laid out as the output: no gradient flows to them (and autograd's apply
// takes no undefined tensor argument).
struct ErrorConstants {
  at::Tensor target, weight;  // weight undefined: 1
  at::Tensor rows;            // defined: output image b is compared with image rows[b] of target and weight
};

// The target and weight values of output memory positions [begin, end): pointers into them, or, with
// rows, into `target_buffer` and `weight_buffer` (kGrain floats each) filled from the rows' images.
struct ChunkConstants {
  const float *target, *weight;
};
ChunkConstants chunk_constants(const ErrorConstants& k, std::int64_t image_size, std::int64_t begin, std::int64_t end,
                               float* target_buffer, float* weight_buffer) {
  const float* t = k.target.data_ptr<float>();
  const float* w = k.weight.defined() ? k.weight.data_ptr<float>() : nullptr;
  if (!k.rows.defined()) return {t + begin, w ? w + begin : nullptr};
  const std::int64_t* rows = k.rows.data_ptr<std::int64_t>();
  for (std::int64_t p = begin; p < end;) {
    const std::int64_t image = p / image_size, offset = p % image_size, n = std::min(end - p, image_size - offset);
    const std::int64_t from = rows[image] * image_size + offset;
    std::memcpy(target_buffer + (p - begin), t + from, n * sizeof(float));
    if (w) std::memcpy(weight_buffer + (p - begin), w + from, n * sizeof(float));
    p += n;
  }
  return {target_buffer, w ? weight_buffer : nullptr};
}

// The loss's gradient for an upstream gradient `g` into `grad`: one pass over the output.
void error_gradient(const at::Tensor& out, const ErrorConstants& k, float p, float g, at::Tensor& grad) {
  const float* o = out.data_ptr<float>();
  float* d = grad.data_ptr<float>();
  const std::int64_t image_size = out.numel() / out.size(0);
  for_each_chunk(out.numel(), [&](std::int64_t, std::int64_t begin, std::int64_t end) {
    float target_buffer[kGrain], weight_buffer[kGrain];
    const ChunkConstants c = chunk_constants(k, image_size, begin, end, target_buffer, weight_buffer);
    error_grad_range(o + begin, c.target, c.weight, d + begin, 0, end - begin, p, g);
  });
}

// The loss reads its output and constants once: the gradient for the upstream gradient 1 (the loss
// summed into the objective as it is) is formed in the same pass when autograd will ask for it, and the
// backward recomputes it only for another upstream gradient.
struct FusedError : public torch::autograd::Function<FusedError> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& out,
                                                ErrorConstants k, double p, double divisor, bool with_gradient) {
    const float* o = out.data_ptr<float>();
    const float unit_g = static_cast<float>(1.0 / divisor);
    at::Tensor grad = with_gradient ? at::empty_like(out) : at::Tensor();
    float* d = with_gradient ? grad.data_ptr<float>() : nullptr;
    const std::int64_t image_size = out.numel() / out.size(0);
    const double sum = sum_over_chunks(out.numel(), [&](std::int64_t begin, std::int64_t end) {
      float target_buffer[kGrain], weight_buffer[kGrain];
      const ChunkConstants c = chunk_constants(k, image_size, begin, end, target_buffer, weight_buffer);
      if (d) error_grad_range(o + begin, c.target, c.weight, d + begin, 0, end - begin, static_cast<float>(p), unit_g);
      return error_sum_range(o + begin, c.target, c.weight, 0, end - begin, static_cast<float>(p));
    });
    ctx->save_for_backward({out, k.target, k.weight, k.rows, grad});
    ctx->saved_data["p"] = p;
    ctx->saved_data["divisor"] = divisor;
    return {at::full({}, sum / divisor, out.options())};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const double upstream = grads[0].item<double>();
    if (upstream == 1.0 && saved[4].defined()) return {saved[4], at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    const float g = static_cast<float>(upstream / ctx->saved_data["divisor"].toDouble());
    at::Tensor grad = at::empty_like(saved[0]);
    error_gradient(saved[0], {saved[1], saved[2], saved[3]}, static_cast<float>(ctx->saved_data["p"].toDouble()), g, grad);
    return {grad, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

XDQ_VECTOR_CLONES void mix_range(const float* quantized, const float* fp, float* out, std::int64_t n, float drop,
                                 const float* draws) {
  for (std::int64_t i = 0; i < n; ++i) out[i] = draws[i] < drop ? fp[i] : quantized[i];
}

// AdaRound's soft rounding of one layer on the CPU: per element e of channel k (axis 0), with
// h = clamp(σ(v)(ζ - γ) + γ, 0, 1): W̃ = (clamp(floor(W/s_k) + z_k + h, qmin, qmax) - z_k)·s_k and, when beta > 0,
// R = Σ 1 - |2h - 1|^β. Backward: dv = (dW̃·s_k·[grid inside] + dR·dR/dh)·dh/dv, each clamp passing its
// gradient on its closed interval as ATen's does. The forward stores each element's two coefficients,
// dv = dW̃·a + dR·b, so the backward has no exp or pow to recompute.
struct SoftRoundingConstants {
  at::Tensor weight, scale, zero;  // weight contiguous; scale, zero float32 per output channel (or one)
  float qmin, qmax, beta;
};

// One output channel of the soft rounding: the weights, their two gradient coefficients, and (returned)
// the regularizer's sum. The sigmoid and the power are float32, their exp and pow computed in double and
// rounded once. In blocks, in stages that each work in one width (GCC vectorizes no loop that selects
// between doubles on a float comparison); the regularizer's element e goes to running sum e mod 16, the
// 16 then added in order: an order that does not depend on the instruction set, in a loop without a
// reduction (which GCC would not vectorize without reassociating it).
struct SoftRoundingChannel {
  const float *v, *w;
  float *out, *dw_coef, *dr_coef;  // dr_coef: null without the regularizer
  std::int64_t n;
  float scale, zero, qmin, qmax, beta;
};
template <bool kRegularizer>
[[gnu::always_inline]] inline double soft_round_channel(const SoftRoundingChannel& channel) {
  constexpr std::int64_t kBlock = 256, kLanes = 16;
  constexpr float kSpan = static_cast<float>(kZeta - kGamma);
  const SoftRoundingChannel c = channel;  // a local copy: stores through its pointers cannot change it
  const vector_math::PowerOfUnitInterval power_of(static_cast<double>(c.beta - 1.0f));
  double lanes[kLanes] = {};
  for (std::int64_t begin = 0; begin < c.n; begin += kBlock) {
    const std::int64_t m = std::min(kBlock, c.n - begin);
    const float* v = c.v + begin;
    float e_minus_v[kBlock], dh_dv[kBlock], distance[kBlock], power[kBlock];
    for (std::int64_t j = 0; j < m; ++j)
      e_minus_v[j] = static_cast<float>(vector_math::exp_double(-static_cast<double>(v[j])));
    for (std::int64_t j = 0; j < m; ++j) {
      const std::int64_t e = begin + j;
      const float sig = 1.0f / (1.0f + e_minus_v[j]);
      const float raw = sig * kSpan + static_cast<float>(kGamma);
      dh_dv[j] = raw >= 0.0f && raw <= 1.0f ? kSpan * sig * (1.0f - sig) : 0.0f;
      const float h = std::min(std::max(raw, 0.0f), 1.0f);
      const float grid = std::floor(c.w[e] / c.scale) + c.zero + h;
      c.out[e] = (std::min(std::max(grid, c.qmin), c.qmax) - c.zero) * c.scale;
      c.dw_coef[e] = grid >= c.qmin && grid <= c.qmax ? c.scale * dh_dv[j] : 0.0f;
      distance[j] = 2.0f * h - 1.0f;  // d = 2h - 1
    }
    if constexpr (!kRegularizer) continue;
    for (std::int64_t j = 0; j < m; ++j) power[j] = static_cast<float>(power_of(std::fabs(static_cast<double>(distance[j]))));
    // d/dh of 1 - |d|^β: -2β|d|^(β-1) sign(d); |d|^β = |d|^(β-1)·|d|.
    for (std::int64_t j = 0; j < m; ++j) {
      const float d = distance[j], sign = d > 0.0f ? 1.0f : (d < 0.0f ? -1.0f : 0.0f);
      c.dr_coef[begin + j] = -2.0f * c.beta * power[j] * sign * dh_dv[j];
    }
    auto add_terms = [&](std::int64_t j, std::int64_t count) {
      for (std::int64_t l = 0; l < count; ++l) lanes[l] += 1.0 - static_cast<double>(power[j + l] * std::fabs(distance[j + l]));
    };
    std::int64_t j = 0;
    for (; j + kLanes <= m; j += kLanes) add_terms(j, kLanes);
    add_terms(j, m - j);
  }
  double sum = 0;
  for (double lane : lanes) sum += lane;
  return sum;
}
XDQ_VECTOR_CLONES double soft_round_channel_regularized(const SoftRoundingChannel& c) {
  return soft_round_channel<true>(c);
}
XDQ_VECTOR_CLONES void soft_round_channel_plain(const SoftRoundingChannel& c) { soft_round_channel<false>(c); }

XDQ_VECTOR_CLONES void soft_rounding_gradient(const float* grad_w, const float* dw_coef, float grad_r, const float* dr_coef,
                                              float* grad_v, std::int64_t begin, std::int64_t end) {
  if (!dr_coef)
    for (std::int64_t e = begin; e < end; ++e) grad_v[e] = grad_w[e] * dw_coef[e];
  else if (!grad_w)
    for (std::int64_t e = begin; e < end; ++e) grad_v[e] = grad_r * dr_coef[e];
  else
    for (std::int64_t e = begin; e < end; ++e) grad_v[e] = grad_w[e] * dw_coef[e] + grad_r * dr_coef[e];
}

struct FusedSoftRounding : public torch::autograd::Function<FusedSoftRounding> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& v_in,
                                                SoftRoundingConstants k) {
    const at::Tensor v = v_in.contiguous();
    const std::int64_t channels = k.scale.numel(), per_channel = v.numel() / channels;
    // Without the regularizer (β <= 0) it is the constant 0: no coefficients to keep for it.
    at::Tensor out = at::empty_like(v), dw_coef = at::empty_like(v), dr_coef = k.beta > 0 ? at::empty_like(v) : at::Tensor();
    const float *s = k.scale.data_ptr<float>(), *z = k.zero.data_ptr<float>();
    std::vector<double> partial(channels, 0.0);
    at::parallel_for(0, channels, 1, [&](std::int64_t first_channel, std::int64_t end_channel) {
      for (std::int64_t ch = first_channel; ch < end_channel; ++ch) {
        const std::int64_t first = ch * per_channel;
        const SoftRoundingChannel c{v.data_ptr<float>() + first, k.weight.data_ptr<float>() + first, out.data_ptr<float>() + first,
                                    dw_coef.data_ptr<float>() + first,
                                    dr_coef.defined() ? dr_coef.data_ptr<float>() + first : nullptr, per_channel,
                                    s[ch], z[ch], k.qmin, k.qmax, k.beta};
        if (k.beta > 0)
          partial[ch] = soft_round_channel_regularized(c);
        else
          soft_round_channel_plain(c);
      }
    });
    double regularizer = 0;
    for (double r : partial) regularizer += r;
    ctx->save_for_backward({dw_coef, dr_coef});
    return {out, at::full({}, regularizer, v.options())};
  }
  // dv = dW̃·a + dR·b in one pass (as ATen's multiplies and add would round it).
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &dw_coef = saved[0], &dr_coef = saved[1];
    const bool regularized = grads[1].defined() && dr_coef.defined();
    if (!grads[0].defined() && !regularized) return {at::zeros_like(dw_coef), at::Tensor()};
    const at::Tensor grad_w = grads[0].defined() ? grads[0].contiguous() : at::Tensor();
    const float grad_r = regularized ? grads[1].item<float>() : 0.0f;
    at::Tensor grad_v = at::empty_like(dw_coef);
    const float* gw = grad_w.defined() ? grad_w.data_ptr<float>() : nullptr;
    const float* b = regularized ? dr_coef.data_ptr<float>() : nullptr;
    at::parallel_for(0, grad_v.numel(), kGrain, [&](std::int64_t begin, std::int64_t end) {
      soft_rounding_gradient(gw, dw_coef.data_ptr<float>(), grad_r, b, grad_v.data_ptr<float>(), begin, end);
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
    fill_draws(d + begin, begin, end, index, key);
  });
  return out.to(like.device());
}

namespace {
// The mean over images and positions of the sum over channels: one sum over every element divided by the
// count of (image, position) pairs (a sum over the channel axis first is a slow strided reduction in
// channels-last memory).
double loss_divisor(const at::Tensor& out) {
  return static_cast<double>(out.dim() > 1 ? out.numel() / out.size(1) : out.numel());
}
bool fused_loss(const at::Tensor& out, const at::Tensor& target, const at::Tensor& weight) {
  return out.is_cpu() && out.dim() >= 1 && out.size(0) > 0 && out.scalar_type() == at::kFloat &&
         target.scalar_type() == at::kFloat && (!weight.defined() || weight.scalar_type() == at::kFloat);
}
at::Tensor fused_error(const at::Tensor& out, const ErrorConstants& k, double p) {
  return FusedError::apply(out, k, p, loss_divisor(out), at::GradMode::is_enabled() && out.requires_grad())[0];
}
}  // namespace

at::Tensor reconstruction_loss(const at::Tensor& out, const at::Tensor& target, const at::Tensor& weight, double p) {
  if (fused_loss(out, target, weight)) {
    const at::Tensor o = dense(out);
    return fused_error(o, {laid_out_as(target, o), weight.defined() ? laid_out_as(weight, o) : weight}, p);
  }
  at::Tensor err = p == 2 ? (out - target).pow(2) : (out - target).abs().pow(p);
  if (weight.defined()) err = err * weight.pow(2);
  return err.sum() / loss_divisor(out);
}

at::Tensor gather_rows(const at::Tensor& cache, const at::Tensor& rows) {
  if (cache.dim() == 4 && !cache.is_contiguous() && cache.is_contiguous(at::MemoryFormat::ChannelsLast))
    return cache.permute({0, 2, 3, 1}).index_select(0, rows).permute({0, 3, 1, 2});
  return cache.index_select(0, rows);
}

namespace {
// Whether `rows` can index a cache read in place: one CPU axis of int64 image indices.
bool rows_index_in_place(const at::Tensor& rows) {
  return rows.is_cpu() && rows.scalar_type() == at::kLong && rows.dim() == 1;
}
// `rows` contiguous, each checked to be an image of a cache of `images` (read in place, an index outside
// it would read other memory); `who` names the caller in the error.
at::Tensor checked_rows(const at::Tensor& rows, std::int64_t images, const std::string& who) {
  const at::Tensor r = rows.contiguous();
  if (r.numel() > 0 && (r.min().item<std::int64_t>() < 0 || r.max().item<std::int64_t>() >= images))
    throw Error(who + ": a row outside the " + std::to_string(images) + " cached images");
  return r;
}
}  // namespace

at::Tensor reconstruction_loss_of_rows(const at::Tensor& out, const at::Tensor& target, const at::Tensor& weight,
                                       const at::Tensor& rows, double p) {
  const at::Tensor o = out.is_cpu() ? dense(out) : out;
  // In place where the caches hold float32 images laid out as the output's (a float16 cache is converted).
  auto in_place = [&](const at::Tensor& cache) {
    return !cache.defined() || (cache.is_cpu() && cache.sizes().slice(1) == o.sizes().slice(1) &&
                                cache.strides().slice(1) == o.strides().slice(1) && cache.stride(0) == o.stride(0) &&
                                cache.is_non_overlapping_and_dense());
  };
  if (fused_loss(o, target, weight) && in_place(target) && in_place(weight) && rows_index_in_place(rows) &&
      rows.size(0) == o.size(0))
    return fused_error(o, {target, weight, checked_rows(rows, target.size(0), "reconstruction_loss_of_rows")}, p);
  return reconstruction_loss(out, gather_rows(target, rows).to(at::kFloat),
                             weight.defined() ? gather_rows(weight, rows).to(at::kFloat) : weight, p);
}

namespace {
// QDrop's mixing of float32 images of `image` elements each, `out` laid out as `quantized` and `fp`: output
// image b reads image rows[b] of both (rows null: image b).
at::Tensor mix_images(const at::Tensor& quantized, const at::Tensor& fp, const std::int64_t* rows, at::Tensor out,
                      std::int64_t image, double drop_prob, std::uint64_t key) {
  const StepGrid g{0.0f, 0.0f, 0.0f, drop_prob, key};
  const LogicalIndex index(out);
  const float *qd = quantized.data_ptr<float>(), *fd = fp.data_ptr<float>();
  float* od = out.data_ptr<float>();
  for_each_chunk(out.numel(), [&](std::int64_t, std::int64_t begin, std::int64_t end) {
    float buffer[kGrain];
    const float* draws = chunk_draws(g, index, begin, end, buffer);
    for (std::int64_t p = begin, n; p < end; p += n) {  // the chunk's part of each image
      const std::int64_t b = p / image, from = (rows ? rows[b] : b) * image + p % image;
      n = std::min(end, (b + 1) * image) - p;
      mix_range(qd + from, fd + from, od + p, n, static_cast<float>(drop_prob), draws + (p - begin));
    }
  });
  return out;
}
}  // namespace

at::Tensor qdrop_mix(const at::Tensor& quantized, const at::Tensor& fp, double drop_prob, std::uint64_t key) {
  const bool fused = quantized.is_cpu() && quantized.scalar_type() == at::kFloat && fp.scalar_type() == at::kFloat &&
                     !(at::GradMode::is_enabled() && (quantized.requires_grad() || fp.requires_grad()));
  if (drop_prob <= 0) return quantized;
  if (!fused) return at::where(uniform_draws(quantized, key) < drop_prob, fp, quantized);
  const at::Tensor q = dense(quantized), f = laid_out_as(fp, q);
  return mix_images(q, f, nullptr, at::empty_like(q), std::max<std::int64_t>(q.numel(), 1), drop_prob, key);
}

at::Tensor qdrop_mix_of_rows(const at::Tensor& quantized, const at::Tensor& fp, const at::Tensor& rows, double drop_prob,
                             std::uint64_t key) {
  // In place: float32 caches alike on the CPU, each image one block of memory, its first axis outermost.
  const bool in_place = drop_prob > 0 && quantized.is_cpu() && fp.is_cpu() && quantized.scalar_type() == at::kFloat &&
                        fp.scalar_type() == at::kFloat && !quantized.requires_grad() && !fp.requires_grad() &&
                        quantized.dim() >= 1 && quantized.size(0) > 0 && quantized.sizes() == fp.sizes() &&
                        quantized.strides() == fp.strides() && quantized.is_non_overlapping_and_dense() &&
                        quantized.stride(0) * quantized.size(0) == quantized.numel() && quantized.stride(0) > 0 &&
                        rows_index_in_place(rows);
  if (!in_place)
    return qdrop_mix(gather_rows(quantized, rows).to(at::kFloat), gather_rows(fp, rows).to(at::kFloat), drop_prob, key);
  const at::Tensor r = checked_rows(rows, quantized.size(0), "qdrop_mix_of_rows");
  std::vector<std::int64_t> sizes = quantized.sizes().vec();
  sizes[0] = r.numel();
  const at::Tensor out = at::empty_strided(sizes, quantized.strides(), quantized.options());
  return mix_images(quantized, fp, r.data_ptr<std::int64_t>(), out, quantized.stride(0), drop_prob, key);
}

at::Tensor lsq_fake_quantize(const at::Tensor& x, const at::Tensor& scale, const QParams& q, double grad_factor,
                             double drop_prob, std::uint64_t key) {
  const double z = q.zero_point.item<double>();
  if (x.is_cpu() && x.scalar_type() == at::kFloat && scale.scalar_type() == at::kFloat)
    return FusedLsq::apply(x, scale,
                           StepGrid{0.0f, static_cast<float>(q.qmin - z), static_cast<float>(q.qmax - z), drop_prob, key},
                           grad_factor)[0];
  // Elsewhere, composed of ATen ops: the gradient of the step scaled through s = (scale - f·scale) + f·scale.
  const at::Tensor s = grad_factor == 1.0 ? scale : (scale - scale * grad_factor).detach() + scale * grad_factor;
  const at::Tensor y = x / s;
  const at::Tensor rounded = (at::round(y) - y).detach() + y;
  const at::Tensor xq = ((rounded + z).clamp(static_cast<double>(q.qmin), static_cast<double>(q.qmax)) - z) * s;
  return drop_prob > 0 ? qdrop_mix(xq, x, drop_prob, key) : xq;
}

}  // namespace xdq
