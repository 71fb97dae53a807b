#pragma once
// What the benchmarks share: timing, medians, and the reconstruction iteration of one block against a
// plain ATen forward + backward of the same block.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "xdq/exec/convolution.h"
#include "xdq/exec/executor.h"
#include "xdq/quant/ptq.h"
#include "xdq/plugin/quantize.h"
#include "xdq/plugin/registry.h"
#include "xdq/quant/reconstruction.h"
#include "xdq/synthesis/synthesis.h"

namespace xdq::bench {

// Waits for the work queued on `device` (a GPU runs asynchronously): a copy to the CPU waits for the
// stream that everything here runs on.
inline void synchronize(const c10::Device& device) {
  if (!device.is_cpu()) at::zeros({1}, at::TensorOptions().device(device)).cpu();
}

// Wall time of f, the device's queued work included.
inline double seconds(const std::function<void()>& f, const c10::Device& device = c10::Device(c10::kCPU)) {
  synchronize(device);
  const auto t = std::chrono::steady_clock::now();
  f();
  synchronize(device);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// The command line of the benchmarks that time one model, `[MODEL.pt] [--threads N] [--rounds R]` (the
// shipped ResNet-20 by default); `usage` printed and exit status 2 for anything else.
struct ModelBenchArgs {
  std::string model_path;
  int threads = 0, rounds = 3;
};
inline ModelBenchArgs parse_model_bench_args(int argc, char** argv, const std::string& default_model, const char* usage) {
  ModelBenchArgs args{default_model};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if ((a == "--threads" || a == "--rounds") && i + 1 < argc) (a == "--threads" ? args.threads : args.rounds) = std::stoi(argv[++i]);
    else if (a.rfind("--", 0) != 0) args.model_path = a;
    else {
      std::fprintf(stderr, "usage: %s\n", usage);
      std::exit(2);
    }
  }
  return args;
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// A basic residual block (conv, relu, conv, add, relu) with the weights of `unit`'s two convs, written
// directly in ATen, forward and backward of an MSE loss on a batch of `batch` inputs of side `side`;
// `format` is the memory layout of its weights and inputs (channels-last: NHWC), `conv` its convolutions'.
class PlainBlock {
 public:
  PlainBlock(const Graph& folded, const ReconstructionUnit& unit, std::int64_t batch, std::int64_t side,
             at::MemoryFormat format = at::MemoryFormat::Contiguous, ConvAlgorithm conv = ConvAlgorithm::Direct)
      : conv_(conv),
        w1_(folded.nodes[unit.layers[0]].weight.clone(format).requires_grad_(true)),
        w2_(folded.nodes[unit.layers[1]].weight.clone(format).requires_grad_(true)),
        b1_(folded.nodes[unit.layers[0]].bias),
        b2_(folded.nodes[unit.layers[1]].bias),
        in_(at::rand({batch, w1_.size(1), side, side}).to(w1_.device()).contiguous(format)),
        target_(at::rand({batch, w2_.size(0), side, side}).to(w1_.device()).contiguous(format)) {}
  void step() const {
    at::AutoGradMode grad(true);
    const at::Tensor h = at::relu(conv3x3(in_, w1_, b1_));
    const at::Tensor out = at::relu(conv3x3(h, w2_, b2_) + in_);
    ((out - target_).pow(2).sum(1).mean()).backward();
  }
  // The five convolution passes of step() alone (the forwards of both convolutions, the second's gradients
  // to its input and weights, the first's to its weights), from given output gradients: what any
  // iteration of the block spends with these kernels, before its elementwise work and autograd.
  void convolution_passes() const {
    at::AutoGradMode grad(true);
    const at::Tensor h = conv3x3(in_, w1_, b1_);
    conv3x3(h.detach().requires_grad_(true), w2_, b2_).backward(target_);
    h.backward(target_);  // target_ stands for any gradient of the output's shape and layout
  }
  // The FLOPs of those five passes: each the 2 * N*H*W * K*C*9 multiply-adds of a direct 3x3 convolution
  // (a Winograd pass is counted at the direct FLOPs it stands for).
  double convolution_pass_flops() const {
    const double positions = static_cast<double>(in_.size(0) * in_.size(2) * in_.size(3));
    auto pass = [&](const at::Tensor& w) { return 2.0 * positions * static_cast<double>(w.numel()); };
    return 2 * pass(w1_) + 3 * pass(w2_);
  }

 private:
  // The block's 3x3 convolutions: stride 1, padding 1.
  at::Tensor conv3x3(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) const {
    ConvAttrs same;
    same.padding = {1, 1};
    return convolve(x, w, b, same, conv_);
  }
  ConvAlgorithm conv_;
  at::Tensor w1_, w2_, b1_, b2_, in_, target_;
};

// The reconstruction engine's own timing of its loops (seconds per iteration of the rounding loop and of
// the activation-step loop, 0 when it has none) on units `names`, with options `o` over `calibration`
// (preprocessed), from `model`'s ranges. Every unit runs; those named are reported, in their order.
struct IterationSeconds {
  double weights = 0, steps = 0;
};
inline std::vector<IterationSeconds> reconstruction_iteration_seconds(const QuantizedModel& model, const at::Tensor& calibration,
                                                                      const std::vector<std::string>& names,
                                                                      const ReconstructionOptions& o) {
  QuantizedModel q = model;
  RoundingContext ctx;
  ctx.calibration = calibration;
  ctx = q.rounding_context(ctx);
  at::AutoGradMode grad(true);
  std::vector<IterationSeconds> out(names.size());
  for (const UnitReport& r : reconstruct(ctx, o))
    for (std::size_t i = 0; i < names.size(); ++i)
      if (r.name == names[i]) out[i] = {r.timing.seconds_per_iteration, r.timing.step_seconds_per_iteration};
  return out;
}
inline IterationSeconds reconstruction_iteration_seconds(const QuantizedModel& model, const at::Tensor& calibration,
                                                         const std::string& name, const ReconstructionOptions& o) {
  return reconstruction_iteration_seconds(model, calibration, std::vector<std::string>{name}, o)[0];
}

// W4A4 as a run quantizes before reconstructing: `preset`, minmax activation ranges, mse weight ranges,
// nearest rounding.
inline RecipeSettings w4a4_settings(PluginRegistry& registry, const std::string& preset) {
  RecipeSettings recipe;
  recipe.ptq.w_bits = recipe.ptq.a_bits = 4;
  recipe.ptq.scheme = Scheme::load(preset, config_dir() + "/presets");
  recipe.ptq.weight_range = "mse";
  recipe.calibrator = registry.default_choice(PluginKind::Calibrator, "minmax");
  recipe.rounding = registry.default_choice(PluginKind::WeightOptimizer, "nearest");
  return recipe;
}

// A rounding plugin's default options (its paper's), with `iters` iterations of each loop.
inline ReconstructionOptions reconstruction_defaults(PluginRegistry& registry, const std::string& method, std::int64_t iters) {
  ReconstructionOptions o =
      reconstruction_options(default_options(registry.get(PluginKind::WeightOptimizer, method).options), method);
  o.iters = o.act_iters = iters;
  return o;
}

// One synthesis iteration of the engine (options `o`, batch `batch` of `shape` images): the engine run for
// 1 and for 1 + iters steps, the difference divided by iters (set-up and the first step left out).
inline double synthesis_iteration_seconds(const std::vector<SynthesisModel>& models, const std::vector<std::int64_t>& shape,
                                          std::int64_t batch, std::int64_t iters, BnSynthesisOptions o,
                                          const c10::Device& device) {
  o.batch_size = batch;
  o.warmup = 0;
  o.iterations = 1;
  const double setup = seconds([&] { synthesize_from_bn_statistics(models, shape, batch, 0, o, nullptr); }, device);
  o.iterations = 1 + iters;
  const double all = seconds([&] { synthesize_from_bn_statistics(models, shape, batch, 0, o, nullptr); }, device);
  return (all - setup) / static_cast<double>(iters);
}

// A synthesizer plugin's default options (its paper's).
inline BnSynthesisOptions synthesis_defaults(PluginRegistry& registry, const std::string& method) {
  return bn_synthesis_options(default_options(registry.get(PluginKind::Synthesizer, method).options), method);
}

// Multiply-adds x 2 of one image through `graph`'s convs and linears, from the shapes of one run.
inline double flops_per_image(const Graph& graph, const at::Tensor& one_image) {
  const std::vector<c10::IValue> values = Executor(graph).all_values(one_image);
  double flops = 0;
  for (int n : graph.layer_nodes()) {
    const Node& node = graph.nodes[n];
    const at::Tensor out = values.at(node.outputs[0]).toTensor();
    flops += 2.0 * static_cast<double>(out.numel() / out.size(0)) * static_cast<double>(node.weight[0].numel());
  }
  return flops;
}

// GFLOP/s of a large 3x3 convolution (256 -> 256 channels, 56x56, batch 16) in `format`: the machine's
// practical peak for the kind of work evaluation does (with Winograd: the direct FLOPs over its time).
inline double conv_peak_gflops(at::MemoryFormat format, const c10::Device& device, int repeats = 5,
                               ConvAlgorithm conv = ConvAlgorithm::Direct) {
  at::NoGradGuard no_grad;
  const auto on = at::TensorOptions().device(device);
  const at::Tensor x = at::rand({16, 256, 56, 56}, on).contiguous(format), w = at::rand({256, 256, 3, 3}, on).contiguous(format);
  ConvAttrs same;
  same.padding = {1, 1};
  convolve(x, w, {}, same, conv);  // warm-up: primitive caches
  const double t = seconds([&] {
    for (int r = 0; r < repeats; ++r) convolve(x, w, {}, same, conv);
  }, device);
  return 2.0 * 16 * 256 * 56 * 56 * 256 * 9 * repeats / t / 1e9;
}

}  // namespace xdq::bench
