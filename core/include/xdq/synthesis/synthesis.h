#pragma once
// Calibration images synthesized from the models' BatchNorm statistics (data-free quantization).
// One optimization loop with switches covers ZeroQ, DeepInversion and MixMix; each synthesizer plugin
// declares its paper's options and defaults and fills BnSynthesisOptions. The images are the parameters:
// Adam on the normalized input of the first model, every model reading it through its own preprocessing.
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "xdq/config/options.h"
#include "xdq/plugin/interfaces.h"

namespace xdq {

// ZeroQ: statistics of each image over its positions; DeepInversion: over the batch and positions.
enum class BnStatistics { PerSample, Batch };

struct BnSynthesisOptions {
  std::string method = "synthesis";  // for messages
  BnStatistics statistics = BnStatistics::Batch;
  std::int64_t iterations = 500, batch_size = 64;
  double lr = 0.25, beta1 = 0.9, beta2 = 0.999;
  std::string lr_schedule = "plateau";   // plateau (ZeroQ) or cosine (DeepInversion, with warm-up)
  std::int64_t plateau_patience = 100, warmup = 0;
  double min_lr = 1e-4;
  double bn_weight = 1, first_bn_multiplier = 1;
  double input_stats_weight = 0;  // ZeroQ: each normalized image pulled to per-channel mean 0, std 1
  double ce_weight = 0;           // cross-entropy on random target labels
  double tv_l1 = 0, tv_l2 = 0, l2 = 0;  // image priors (DeepInversion's)
  double jitter = 0;              // random roll, as a fraction of the image side
  bool flips = false;             // random horizontal flips
  bool clamp_pixels = false;      // pixels kept in [0, 1] after every step
  bool data_mixing = false;       // MixMix: a resized image pasted into a random box of another
  double mix_min_side = 0.3, mix_max_side = 0.7;  // box side as a fraction of the image side
  bool feature_mixing = false;    // MixMix: the loss averaged over several models (else exactly one)
};

// Per BatchNorm layer, its input x [N, C, ...] against the running statistics of `bn`:
//   ZeroQ:  Σ_n ‖μ − m_n‖²/N + Σ_n ‖σ − s_n‖²/N, m_n, s_n per image over positions (s: sqrt of the
//           unbiased variance + eps), σ = sqrt(running_var + eps), eps = 1e-6;
//   DeepInversion: ‖σ²_batch − running_var‖₂ + ‖μ_batch − running_mean‖₂ over (N, positions), biased.
at::Tensor zeroq_bn_loss(const at::Tensor& x, const at::Tensor& running_mean, const at::Tensor& running_var);
at::Tensor deepinversion_bn_loss(const at::Tensor& x, const at::Tensor& running_mean, const at::Tensor& running_var);
// The same in two steps: the moments of a BN input x (PerSample: per image over positions, unbiased,
// [N, C, 1, 1]; Batch: over images and positions, biased, [1, C, 1, 1]) with a value passed on, and the
// loss of those moments. bn_moments passes x itself on, for a layer to read in x's place (its backward
// then adds the moments' gradient to the layer's in one pass). bn_layer_moments, as synthesis runs each
// BN layer, passes on the layer `bn` (eval mode) applied to x, `residual` added when defined (a residual
// block's add, differentiable: its gradient is the add's) and ReLU after it when `relu`: one backward
// pass over x for ReLU, the layer and the moments, every rounding the unfused chain's (the layer's, one
// rounding for the add, ReLU's mask, ATen's (g · invstd) · w, then the moments' term).
struct BnMoments {
  at::Tensor x, mean, var;  // x: the value passed on
};
BnMoments bn_moments(const at::Tensor& x, BnStatistics statistics);
BnMoments bn_layer_moments(const at::Tensor& x, const BatchNormStats& bn, bool relu, BnStatistics statistics,
                           const at::Tensor& residual = {});
at::Tensor bn_statistics_loss(const BnMoments& m, BnStatistics statistics, const at::Tensor& running_mean,
                              const at::Tensor& running_var);
// DeepInversion's image priors: the l2 and (mean |·|/255) l1 norms of the differences to the right, down
// and both diagonal neighbours, summed over the four directions.
at::Tensor total_variation_l2(const at::Tensor& x);
at::Tensor total_variation_l1(const at::Tensor& x);

// MixMix data mixing: image perm[i] of x, resized (bilinear) to height x width, replaces that box of
// image i (top-left corner at top, left); the rest of image i is kept.
at::Tensor paste_into_box(const at::Tensor& x, const at::Tensor& perm, std::int64_t top, std::int64_t left,
                          std::int64_t height, std::int64_t width);

// The BatchNorm layers of `graph` in order (their input values); throws, naming the model, when none.
std::vector<int> batch_norm_nodes(const Graph& graph, const std::string& model, const std::string& method);

// Synthesizes `count` images [count, C, H, W] (pixels; in [0, 1] when clamp_pixels) with the target
// labels when a cross-entropy term is on (unlabeled otherwise). Every model must read `input_shape` and
// give the same number of classes. Deterministic for a seed and thread count.
Dataset synthesize_from_bn_statistics(const std::vector<SynthesisModel>& models, const std::vector<std::int64_t>& input_shape,
                                      std::int64_t count, std::uint64_t seed, const BnSynthesisOptions& options,
                                      std::ostream* progress);

// DeepInversion's official defaults (NVlabs/DeepInversion, setting 1), which MixMix builds on.
BnSynthesisOptions deepinversion_defaults();

// Every option above as a plugin schema with `defaults` (the paper's), and back.
OptionSchema bn_synthesis_schema(const BnSynthesisOptions& defaults);
BnSynthesisOptions bn_synthesis_options(const Options& options, const std::string& method);

// The Synthesizer the zeroq, deepinversion and mixmix plugins create.
class BnSynthesizer : public Synthesizer {
 public:
  explicit BnSynthesizer(BnSynthesisOptions options) : options_(std::move(options)) {}
  Dataset synthesize(const SynthesisContext& context) const override;

 private:
  BnSynthesisOptions options_;
};

}  // namespace xdq
