// Real-size speeds of a 224x224 model, measured side by side in one run (rounds interleaved, medians):
//   1. the folder loader alone (decode, resize the shorter side to 256, crop 224, on all cores) in images/s,
//      next to xdq's FP32 evaluation of MODEL at batch 64 from memory: the loader is not the bottleneck
//      of an evaluation while it is faster (FOLDER "none": no loader row, e.g. where OpenCV is missing);
//   2. one BRECQ iteration of layer1.block0 (batch 32; ResNet-18: 64 channels at 56x56) and of the deepest
//      block with an identity residual (ResNet-18's layer4.1: 512 channels at 7x7) / a plain forward +
//      backward of the same block written directly with ATen ops (conv, relu, conv, add, relu; MSE loss);
//   3. one ZeroQ synthesis iteration at batch 64.
// --device runs the model, the block and synthesis there (cpu, cuda, cuda:N); the loader stays on the CPU.
// --convolution winograd: every engine and the plain block convolve with oneDNN's Winograd kernels (the
// experiment key `convolution`); the plain block runs in the model's layout.
// Usage: xdq_bench_imagenet FOLDER|none MODEL.pt [--threads N] [--rounds R] [--device D] [--convolution C]
#include <algorithm>
#include <cstdio>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/grad_mode.h>

#include "xdq/data/test_images.h"
#include "xdq/error.h"
#include "xdq/exec/executor.h"
#include "xdq/ir/import.h"
#include "xdq/parallel.h"
#include "xdq/plugin/quantize.h"
#include "xdq/quant/ptq.h"
#include "xdq/quant/reconstruction.h"

#include "bench_util.h"

using namespace xdq;

using bench::median;
using bench::seconds;

namespace {

// The loader over up to 512 images of the folder's test split (null for "none").
std::unique_ptr<TestImages> folder_loader(const std::string& folder) {
  if (folder == "none") return nullptr;
  InputShape shape;
  shape.channels = 3;
  shape.height = shape.width = 224;
  shape.resize = 256;
  ImageFileList files = list_image_folder(folder, Split::Test, {});
  const auto count = std::min<std::int64_t>(512, static_cast<std::int64_t>(files.files.size()));
  return std::make_unique<TestImages>("val", std::move(files), subset_rows(count, 0, 0), shape, false, TestImages::BatchTransform{});
}

// The first two-convolution block and the deepest one with an identity residual (ResNet-18: layer1.0 with
// 64 channels at 56x56, layer4.1 with 512 at 7x7, where each convolution has 36 times the weights).
std::vector<ReconstructionUnit> timed_blocks(const Graph& folded, const std::string& model_path) {
  std::vector<ReconstructionUnit> blocks;
  for (const ReconstructionUnit& u : reconstruction_units(folded, Granularity::Block)) {
    if (u.layers.size() != 2) continue;
    const at::Tensor &w1 = folded.nodes[u.layers[0]].weight, &w2 = folded.nodes[u.layers[1]].weight;
    const bool identity = w1.sizes() == w2.sizes() && w1.size(0) == w1.size(1);
    if (blocks.empty()) {
      if (u.name == "layer1.0") blocks.push_back(u);
    } else if (identity) {
      blocks.resize(1);
      blocks.push_back(u);
    }
  }
  if (blocks.size() != 2) throw Error(model_path + ": no two-conv block 'layer1.0' followed by an identity block");
  return blocks;
}

int run(const std::string& folder, const std::string& model_path, int threads, int rounds, const c10::Device& device,
        ConvAlgorithm convolution) {
  threads = apply_thread_count(threads);
  auto& registry = global_registry();
  registry.scan(plugin_search_dirs());
  const std::unique_ptr<TestImages> val = folder_loader(folder);
  ImportedModel model = import_torchscript(model_path);
  model.graph.to(device);
  model.graph.channels_last = channels_last_pays(device);  // the layout of `xdq run` (memory_format: auto)
  model.graph.convolution = convolution;
  Executor fp32(model.graph);
  const at::Tensor batch = at::randn({64, 3, 224, 224}).to(device);
  const std::vector<SynthesisModel> synthesis_models{{"model", &model.graph, model.preprocess, {3, 224, 224}}};
  const BnSynthesisOptions zeroq = bench::synthesis_defaults(registry, "zeroq");

  // W4A4 as a run calibrates it (minmax activations, mse weights) on 32 random images: what the
  // reconstruction loop runs on, timed below.
  RecipeSettings recipe = bench::w4a4_settings(registry, "academic");
  recipe.device = device;
  const QuantizeRecipe w4a4_recipe(registry, recipe, std::cerr);
  const at::Tensor calibration = at::randn({32, 3, 224, 224});
  const Graph folded = w4a4_recipe.adapted(model.graph, {});
  const QuantizedModel w4a4 = w4a4_recipe.calibrated(folded, {calibration, {}, nullptr});
  const std::vector<ReconstructionUnit> blocks = timed_blocks(folded, model_path);
  // Each block's input size: the calibration images through the model up to it.
  std::vector<bench::PlainBlock> plain_blocks;
  std::vector<std::string> names;
  std::vector<std::int64_t> sides;
  const Executor folded_exec(folded);
  for (const ReconstructionUnit& unit : blocks) {
    at::NoGradGuard no_grad;
    const int block_input = folded_exec.range_inputs(unit.first, unit.last).at(0);
    sides.push_back(folded_exec.run_nodes(0, unit.first, {{folded.inputs.at(0), calibration.slice(0, 0, 1)}}, {block_input})[0].size(2));
    plain_blocks.emplace_back(folded, unit, 32, sides.back(),
                              model.graph.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous, convolution);
    names.push_back(unit.name);
  }
  constexpr std::int64_t kIters = 20;
  ReconstructionOptions weights_only;  // the rounding loop alone
  weights_only.iters = kIters;

  at::NoGradGuard no_grad;
  fp32.forward(batch);  // warm-up
  std::vector<double> loader, eval, synthesis;
  std::vector<std::vector<double>> plain(blocks.size()), brecq(blocks.size());
  for (int r = 0; r < rounds; ++r) {
    if (val) loader.push_back(seconds([&] { val->for_each_batch(64, [](const at::Tensor&, const at::Tensor&) {}); }));
    eval.push_back(seconds([&] { fp32.forward(batch); }, device));
    for (std::size_t b = 0; b < blocks.size(); ++b)
      plain[b].push_back(seconds([&] {
                           for (std::int64_t i = 0; i < kIters; ++i) plain_blocks[b].step();
                         }, device) /
                         kIters);
    const auto iterations = bench::reconstruction_iteration_seconds(w4a4, calibration, names, weights_only);
    for (std::size_t b = 0; b < blocks.size(); ++b) brecq[b].push_back(iterations[b].weights);
    synthesis.push_back(bench::synthesis_iteration_seconds(synthesis_models, {3, 224, 224}, 64, 2, zeroq, device));
  }
  std::printf("model %s, folder %s, device %s, threads %d, rounds %d, convolution %s (medians)\n", model_path.c_str(),
              folder.c_str(), device.str().c_str(), threads, rounds, convolution == ConvAlgorithm::Winograd ? "winograd" : "direct");
  const double eval_rate = 64.0 / median(eval);
  if (val) {
    const double loader_rate = static_cast<double>(val->size()) / median(loader);
    std::printf("loader alone (decode, resize 256, crop 224)  %7.1f img/s\n", loader_rate);
    std::printf("xdq FP32 evaluation, batch 64               %7.1f img/s   loader / evaluation %.2f   (> 1: not the bottleneck)\n",
                eval_rate, loader_rate / eval_rate);
  } else {
    std::printf("xdq FP32 evaluation, batch 64               %7.1f img/s\n", eval_rate);
  }
  for (std::size_t b = 0; b < blocks.size(); ++b)
    std::printf("block %s, batch 32, %lldx%lld: plain ATen fwd+bwd %.1f ms, BRECQ iteration %.1f ms   ratio %.3f   (target <= 1.3)\n",
                names[b].c_str(), static_cast<long long>(sides[b]), static_cast<long long>(sides[b]), 1e3 * median(plain[b]),
                1e3 * median(brecq[b]), median(brecq[b]) / median(plain[b]));
  std::printf("zeroq synthesis iteration, batch 64: %.1f ms\n", 1e3 * median(synthesis));
  return 0;
}

}  // namespace

constexpr const char* kUsage =
    "usage: xdq_bench_imagenet FOLDER|none MODEL.pt [--threads N] [--rounds R] [--device D] [--convolution direct|winograd]\n";

int main(int argc, char** argv) {
  std::vector<std::string> positional;
  int threads = 0, rounds = 3;
  std::string device = "cpu", convolution = "direct";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--device" && i + 1 < argc) {
      device = argv[++i];
    } else if (a == "--convolution" && i + 1 < argc) {
      convolution = argv[++i];
    } else if ((a == "--threads" || a == "--rounds") && i + 1 < argc) {
      (a == "--threads" ? threads : rounds) = std::max(a == "--rounds" ? 1 : 0, std::atoi(argv[++i]));
    } else if (a.rfind("-", 0) == 0) {
      std::cerr << kUsage;
      return a == "--help" || a == "-h" ? 0 : 2;
    } else {
      positional.push_back(a);
    }
  }
  if (positional.size() != 2) {
    std::cerr << kUsage;
    return 2;
  }
  try {
    const c10::Device d(device);
    if (!d.is_cpu() && !at::hasCUDA()) throw Error("--device " + device + ": this LibTorch has no CUDA");
    return run(positional[0], positional[1], threads, rounds, d, conv_algorithm(convolution));
  } catch (const std::exception& e) {
    std::cerr << "xdq_bench_imagenet: error: " << e.what() << std::endl;
    return 1;
  }
}
