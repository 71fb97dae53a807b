#pragma once
// Reconstruction of the rounding from calibration data: the engine behind the adaround, brecq and qdrop
// plugins, public so that new reconstruction methods can reuse it.
//
// The BN-folded graph is cut into units (a layer with its activation, a block, or two consecutive
// blocks). Unit by unit, in graph order, the unit's weights get AdaRound's soft rounding
//   W~ = s * (clamp(floor(W/s) + z + h(V), qmin, qmax) - z),  h(V) = clamp(sigmoid(V)(zeta - gamma) + gamma, 0, 1)
// and V is learned (Adam) so that the unit's output on the quantized model's input matches the FP
// model's output on the FP input: loss = sum_c (out - target)^2 (mean over batch and positions), optionally
// weighted by the squared Fisher diagonal, + lambda * sum(1 - |2h(V) - 1|^beta) after the warm-up while
// beta anneals. At the end V >= 0 rounds up. Activation steps can be learned with the weights (QDrop) or
// after them (BRECQ), with LSQ's straight-through gradient.
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "xdq/config/options.h"
#include "xdq/quant/model_view.h"

namespace xdq {

enum class Granularity { Layer, Block, TwoBlocks };

// A contiguous node range optimized as one.
struct ReconstructionUnit {
  std::string name;
  int first = 0, last = 0;  // nodes [first, last)
  int output_value = -1;    // the value the loss compares
  std::vector<int> layers;  // conv/linear nodes inside
};

// Layer: each conv/linear with the activation that alone reads it. Block: residual and concat blocks
// (with their shortcut convs), layers that share the module of a block level (an inverted residual
// without skip) grouped, any other layer alone. TwoBlocks: consecutive blocks paired.
std::vector<ReconstructionUnit> reconstruction_units(const Graph& graph, Granularity granularity);
Granularity parse_granularity(const std::string& text);  // "layer", "block", "two_blocks"

// AdaRound's rectified sigmoid, zeta = 1.1, gamma = -0.1.
at::Tensor rectified_sigmoid(const at::Tensor& v);
// V with h(V) = W/s - floor(W/s), the fractional part of each weight on its grid.
at::Tensor initial_rounding_logits(const at::Tensor& weight, const QParams& q);
// The weight with rounding h added to floor(W/s) (h in [0, 1], soft or hard).
at::Tensor soft_quantized_weight(const at::Tensor& weight, const QParams& q, const at::Tensor& h);
// One iteration's rounding of a layer from its logits v: soft_quantized_weight(weight, q, rectified_sigmoid(v))
// and, when beta > 0, AdaRound's regularizer Σ 1 - |2h - 1|^beta (else undefined). On the CPU one pass
// forward and one backward (composed, it was some 25 small autograd operations per layer per iteration).
struct SoftRounding {
  at::Tensor weight, regularizer;
};
SoftRounding soft_rounding(const at::Tensor& v, const at::Tensor& weight, const QParams& q, double beta);

// beta of the rounding regularizer at iteration t of `iters`: `start` during the warm-up fraction, then
// annealed to `end` (linear as BRECQ, or cosine as AIMET). The regularizer is off during the warm-up.
struct BetaSchedule {
  double start = 20, end = 2, warmup = 0.2;
  bool cosine = false;
  double beta(std::int64_t t, std::int64_t iters) const;
  bool regularizing(std::int64_t t, std::int64_t iters) const { return t >= warmup * iters; }
};

// Per-tensor fake quantization with a learnable step `scale` (0-d, requires grad): round with a
// straight-through gradient, the step's gradient multiplied by grad_factor (LSQ: 1/sqrt(numel * qmax)).
// QDrop with drop_prob > 0: element i keeps its FP value where uniform_draws(x, key)[i] < drop_prob.
at::Tensor lsq_fake_quantize(const at::Tensor& x, const at::Tensor& scale, const QParams& q, double grad_factor,
                             double drop_prob = 0, std::uint64_t key = 0);
// QDrop's mixing: element i of `fp` where uniform_draws(quantized, key)[i] < drop_prob, else of `quantized`.
at::Tensor qdrop_mix(const at::Tensor& quantized, const at::Tensor& fp, double drop_prob, std::uint64_t key);
// qdrop_mix(gather_rows(quantized, rows), gather_rows(fp, rows), drop_prob, key) — the same bits — reading
// the images of the two caches in place where both are float32 and laid out alike (on the CPU); float16
// caches are gathered and converted.
at::Tensor qdrop_mix_of_rows(const at::Tensor& quantized, const at::Tensor& fp, const at::Tensor& rows, double drop_prob,
                             std::uint64_t key);
// The reconstruction loss: Σ over channels of weight²·|out - target|^p (no weight: 1), averaged over images
// and positions. On the CPU one pass forward and one backward.
at::Tensor reconstruction_loss(const at::Tensor& out, const at::Tensor& target, const at::Tensor& weight, double p = 2);
// Images `rows` of a cache ([N, ...]), in the cache's memory layout (a channels-last cache gives
// channels-last images).
at::Tensor gather_rows(const at::Tensor& cache, const at::Tensor& rows);
// reconstruction_loss(out, gather_rows(target, rows), gather_rows(weight, rows), p) — the same value and
// gradient — reading the images of the caches `target` and `weight` in place where they are float32 and
// laid out as `out` (on the CPU), instead of gathering copies.
at::Tensor reconstruction_loss_of_rows(const at::Tensor& out, const at::Tensor& target, const at::Tensor& weight,
                                       const at::Tensor& rows, double p = 2);
// Uniform draws in [0, 1), one per element of `like` by its logical (row-major NCHW) index: a hash of `key`
// and the index, so the same numbers in any memory layout, on any thread count and device (drawn on the
// CPU, placed where `like` is). next_draw_key takes a key from a CPU generator.
at::Tensor uniform_draws(const at::Tensor& like, std::uint64_t key);
std::uint64_t next_draw_key(at::Generator& gen);

struct ReconstructionOptions {
  std::string method = "reconstruction";  // names progress lines, errors and files
  Granularity granularity = Granularity::Block;
  std::int64_t iters = 2000;
  std::int64_t batch_size = 32;
  double lr = 1e-3;
  double round_weight = 0.01;  // lambda
  BetaSchedule beta;
  bool fisher = false;         // weight the squared error by (|dKL/d out| + 1)^2 (BRECQ's Fisher diagonal)
  bool act_quant = false;      // activation quantizers on (inputs and inside the unit) while rounding
  double drop_prob = 0;        // QDrop: each activation element left unquantized with this probability
  std::string act_steps = "none";  // "none", "joint" (with the weights), "after" (a second pass)
  double act_lr = 4e-5;        // Adam, cosine-annealed, for steps learned jointly
  std::int64_t act_iters = 500;  // iterations per unit of the "after" pass
  double act_after_lr = 4e-4;
  bool lsq_grad_scale = true;
  bool skip_first = false;     // the first layer, when a unit alone, keeps nearest rounding (BRECQ code)
  double p = 2;                // exponent of the 'after' step loss and of the init_images range search
  std::int64_t init_images = 0;  // > 0: activation ranges re-initialised on this many images (reference code)
  std::int64_t record_every = 10;  // loss-curve sampling
  // Unit caches (inputs FP and quantized, targets, Fisher weights over the calibration set): "float32",
  // "float16", or "auto": float16 when the float32 cache of a unit would exceed cache_limit_mb (ResNet-18's
  // stem at 224x224 with 1 024 images: about 4.5 GB in float32). Read back as float32 for every batch.
  std::string cache_precision = "auto";
  std::int64_t cache_limit_mb = 2048;
};

// The schema every reconstruction plugin declares, with `defaults` as its defaults; and its reading.
OptionSchema reconstruction_schema(const ReconstructionOptions& defaults);
ReconstructionOptions reconstruction_options(const Options& options, const std::string& method);

struct UnitReport {
  std::string name;
  double loss_nearest = 0;  // reconstruction loss over the calibration set, nearest rounding
  double loss_final = 0;    // ... with the learned (hard) rounding
  UnitTiming timing;
  struct Point {
    std::int64_t iteration;
    double reconstruction, rounding, beta;
  };
  std::vector<Point> curve;
};

// The activation-range initialisation of the BRECQ / QDrop reference code: in forward order, each range
// from the first `count` calibration images through the model as quantized now (the layers' quantized
// weights, earlier activation quantizers on), by an Lp search over 80 candidates [min, max] * (1 - 0.01 k)
// keeping the least mean |x - Q(x)|^p.
void initialize_activation_ranges(RoundingContext& context, std::int64_t count, double p);

// Fills context.layers' quantized weights (and learned activation steps). Writes the loss curves as
// <run_name>_curves.csv into context.files when given (the report draws them); progress to context.progress.
std::vector<UnitReport> reconstruct(RoundingContext& context, const ReconstructionOptions& options);

}  // namespace xdq
