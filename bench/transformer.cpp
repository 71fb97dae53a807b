// One BRECQ iteration of a vision transformer's attention and MLP units against a plain forward + backward of
// the same unit written directly with ATen ops, measured side by side in one run (rounds interleaved,
// medians). The model is quantized W4A4 with vit_academic (minmax activations, mse weights) on 32 random
// images, as a run would before reconstructing; the units are the first block's.
//   attention: layer norm, qkv linear, heads, softmax(q kᵀ / sqrt(d)) v, output linear, residual add;
//   MLP:       layer norm, linear, GELU, linear, residual add;
// each with a squared-error loss to a random target, gradients to both weights.
// Usage: xdq_bench_transformer MODEL.pt [--threads N] [--rounds R] [--head-dim D (64)]
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include <ATen/core/grad_mode.h>

#include "xdq/error.h"
#include "xdq/exec/executor.h"
#include "xdq/ir/import.h"
#include "xdq/parallel.h"
#include "xdq/plugin/quantize.h"
#include "xdq/quant/reconstruction.h"

#include "bench_util.h"

using namespace xdq;

namespace {

constexpr std::int64_t kBatch = 32;

// The unit with the graph's weights, as ATen ops: the floor of any engine running it.
class PlainUnit {
 public:
  PlainUnit(const Graph& g, const ReconstructionUnit& unit, std::int64_t tokens, std::int64_t head_dim, bool attention)
      : attention_(attention), head_dim_(head_dim) {
    const Node& first = g.nodes[unit.layers.at(0)];
    const Node& second = g.nodes[unit.layers.at(1)];
    w1_ = first.weight.clone().requires_grad_(true);
    w2_ = second.weight.clone().requires_grad_(true);
    b1_ = first.bias;
    b2_ = second.bias;
    for (int n = unit.first; n < unit.last; ++n)
      if (g.nodes[n].op == "aten::layer_norm") {
        for (const auto& [value, constant] : g.constants) {
          if (value == g.nodes[n].inputs[2]) gamma_ = constant.toTensor();
          if (value == g.nodes[n].inputs[3]) beta_ = constant.toTensor();
        }
      }
    if (!gamma_.defined()) throw Error(unit.name + ": no layer norm with a weight in the unit");
    const std::int64_t width = w1_.size(1);
    in_ = at::randn({kBatch, tokens, width});
    target_ = at::randn({kBatch, tokens, width});
  }

  void step() const {
    at::AutoGradMode grad(true);
    const std::int64_t width = in_.size(2);
    const at::Tensor h = at::layer_norm(in_, {width}, gamma_, beta_, 1e-6);
    at::Tensor out;
    if (attention_) {
      const std::int64_t heads = width / head_dim_, tokens = in_.size(1);
      const at::Tensor qkv = at::linear(h, w1_, b1_).view({kBatch, tokens, 3, heads, head_dim_}).permute({2, 0, 3, 1, 4});
      const at::Tensor q = qkv[0] / std::sqrt(static_cast<double>(head_dim_)), k = qkv[1], v = qkv[2];
      const at::Tensor a = at::softmax(at::matmul(q, k.transpose(-2, -1)), -1);
      out = at::linear(at::matmul(a, v).transpose(1, 2).reshape({kBatch, tokens, width}), w2_, b2_) + in_;
    } else {
      out = at::linear(at::gelu(at::linear(h, w1_, b1_)), w2_, b2_) + in_;
    }
    ((out - target_).pow(2).sum(-1).mean()).backward();
  }

 private:
  bool attention_;
  std::int64_t head_dim_;
  at::Tensor w1_, w2_, b1_, b2_, gamma_, beta_, in_, target_;
};

// The image channels: the patch embedding's input channels.
std::int64_t folded_channels(const Graph& g) { return g.nodes.at(g.layer_nodes().at(0)).weight.size(1); }

int run(const std::string& model_path, int threads, int rounds, std::int64_t head_dim) {
  threads = apply_thread_count(threads);
  auto& registry = global_registry();
  registry.scan(plugin_search_dirs());
  const ImportedModel model = import_torchscript(model_path);
  const std::int64_t side = model.input_size.empty() ? 224 : model.input_size[0];
  const std::int64_t channels = folded_channels(model.graph);
  const QuantizeRecipe w4a4_recipe(registry, bench::w4a4_settings(registry, "vit_academic"), std::cerr);
  const at::Tensor calibration = at::randn({kBatch, channels, side, side});
  const Graph folded = w4a4_recipe.adapted(model.graph, {});
  const QuantizedModel w4a4 = w4a4_recipe.calibrated(folded, {calibration, {}, nullptr});
  std::vector<ReconstructionUnit> units;  // the first block's attention and MLP
  for (const ReconstructionUnit& u : reconstruction_units(folded, Granularity::Block))
    if (units.size() < 2 && u.layers.size() == 2) units.push_back(u);
  if (units.size() < 2) throw Error(model_path + ": no two residual units of two layers each");
  std::int64_t tokens = 0;
  {
    at::NoGradGuard no_grad;
    const Executor exec(folded);
    const int input = exec.range_inputs(units[0].first, units[0].last).at(0);
    tokens = exec.run_nodes(0, units[0].first, {{folded.inputs.at(0), calibration.slice(0, 0, 1)}}, {input})[0].size(1);
  }
  const std::vector<PlainUnit> plain{PlainUnit(folded, units[0], tokens, head_dim, true),
                                     PlainUnit(folded, units[1], tokens, head_dim, false)};
  const std::vector<std::string> names{units[0].name, units[1].name};
  ReconstructionOptions weights_only;  // the rounding loop alone
  weights_only.iters = 10;
  std::vector<std::vector<double>> floor(2), brecq(2);
  for (int r = 0; r < rounds; ++r) {
    for (std::size_t u = 0; u < 2; ++u)
      floor[u].push_back(bench::seconds([&] {
                           for (int i = 0; i < 10; ++i) plain[u].step();
                         }) / 10);
    const auto iterations = bench::reconstruction_iteration_seconds(w4a4, calibration, names, weights_only);
    for (std::size_t u = 0; u < 2; ++u) brecq[u].push_back(iterations[u].weights);
  }
  std::printf("model %s, threads %d, rounds %d, batch %lld, %lld tokens (medians)\n", model_path.c_str(), threads, rounds,
              static_cast<long long>(kBatch), static_cast<long long>(tokens));
  for (std::size_t u = 0; u < 2; ++u)
    std::printf("unit %s: plain ATen fwd+bwd %.1f ms, BRECQ iteration %.1f ms   ratio %.3f   (target <= 1.3)\n",
                names[u].c_str(), 1e3 * bench::median(floor[u]), 1e3 * bench::median(brecq[u]),
                bench::median(brecq[u]) / bench::median(floor[u]));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> positional;
  int threads = 0, rounds = 3;
  std::int64_t head_dim = 64;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if ((a == "--threads" || a == "--rounds" || a == "--head-dim") && i + 1 < argc) {
      const int v = std::atoi(argv[++i]);
      if (a == "--head-dim")
        head_dim = v;
      else
        (a == "--threads" ? threads : rounds) = v;
    } else {
      positional.push_back(a);
    }
  }
  if (positional.size() != 1) {
    std::cerr << "usage: xdq_bench_transformer MODEL.pt [--threads N] [--rounds R] [--head-dim D]\n";
    return 2;
  }
  try {
    return run(positional[0], threads, std::max(1, rounds), head_dim);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
