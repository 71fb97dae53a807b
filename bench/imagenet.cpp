// Real-size speeds of a 224x224 model, measured side by side in one run (rounds interleaved, medians):
//   1. the folder loader alone (decode, resize the shorter side to 256, crop 224, on all cores) in images/s,
//      next to xdq's FP32 evaluation of MODEL at batch 64 from memory: the loader is not the bottleneck
//      of an evaluation while it is faster;
//   2. one BRECQ iteration of layer1.block0 (batch 32; ResNet-18: 64 channels at 56x56) / a plain forward +
//      backward of the same block written directly with ATen ops (conv, relu, conv, add, relu; MSE loss).
// Usage: xdq_bench_imagenet FOLDER MODEL.pt [--threads N] [--rounds R]
#include <algorithm>
#include <cstdio>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include <ATen/core/grad_mode.h>

#include "xdq/data/test_images.h"
#include "xdq/error.h"
#include "xdq/exec/executor.h"
#include "xdq/ir/import.h"
#include "xdq/ir/passes.h"
#include "xdq/parallel.h"
#include "xdq/quant/ptq.h"
#include "xdq/quant/reconstruction.h"

#include "bench_util.h"

using namespace xdq;

using bench::median;
using bench::seconds;

namespace {

int run(const std::string& folder, const std::string& model_path, int threads, int rounds) {
  threads = apply_thread_count(threads);
  InputShape shape;
  shape.channels = 3;
  shape.height = shape.width = 224;
  shape.resize = 256;
  ImageFileList files = list_image_folder(folder, Split::Test, {});
  const auto loader_images = std::min<std::int64_t>(512, static_cast<std::int64_t>(files.files.size()));
  const TestImages val("val", std::move(files), subset_rows(loader_images, 0, 0), shape, false, {});
  const ImportedModel model = import_torchscript(model_path);
  Executor fp32(model.graph);  // in the layout `xdq run` evaluates 224x224 inputs in (memory_format: auto)
  if (Executor::channels_last_pays(224, 224)) fp32.use_channels_last();
  const at::Tensor batch = at::randn({64, 3, 224, 224});

  Graph folded = model.graph;
  fold_batch_norm(folded);
  PtqSettings settings;
  settings.w_bits = settings.a_bits = 4;
  settings.scheme = Scheme::load("academic", config_dir() + "/presets");
  QuantizedModel w4a4(folded, settings);
  w4a4.set_weight_ranges("mse");
  const auto units = reconstruction_units(folded, Granularity::Block);
  const auto unit = std::find_if(units.begin(), units.end(), [](const ReconstructionUnit& u) { return u.name == "layer1.0"; });
  if (unit == units.end() || unit->layers.size() != 2) throw Error(model_path + ": no two-conv block 'layer1.0'");
  // The block's input size: the calibration images through the model up to it.
  const at::Tensor calibration = at::randn({32, 3, 224, 224});
  std::int64_t side = 0;
  {
    at::NoGradGuard no_grad;
    const Executor folded_exec(folded);
    const int block_input = folded_exec.range_inputs(unit->first, unit->last).at(0);
    side = folded_exec.run_nodes(0, unit->first, {{folded.inputs.at(0), calibration.slice(0, 0, 1)}}, {block_input})[0].size(2);
  }
  const bench::PlainBlock block(folded, *unit, 32, side);
  constexpr std::int64_t kIters = 20;

  at::NoGradGuard no_grad;
  fp32.forward(batch);  // warm-up
  std::vector<double> loader, eval, plain, brecq;
  for (int r = 0; r < rounds; ++r) {
    loader.push_back(seconds([&] { val.for_each_batch(64, [](const at::Tensor&, const at::Tensor&) {}); }));
    eval.push_back(seconds([&] { fp32.forward(batch); }));
    plain.push_back(seconds([&] {
                      for (std::int64_t i = 0; i < kIters; ++i) block.step();
                    }) /
                    kIters);
    brecq.push_back(bench::reconstruction_iteration_seconds(w4a4, calibration, unit->name, kIters));
  }
  std::printf("model %s, folder %s, threads %d, rounds %d (medians)\n", model_path.c_str(), folder.c_str(), threads, rounds);
  const double loader_rate = static_cast<double>(loader_images) / median(loader), eval_rate = 64.0 / median(eval);
  std::printf("loader alone (decode, resize 256, crop 224)  %7.1f img/s\n", loader_rate);
  std::printf("xdq FP32 evaluation, batch 64               %7.1f img/s   loader / evaluation %.2f   (> 1: not the bottleneck)\n",
              eval_rate, loader_rate / eval_rate);
  std::printf("block %s, batch 32, %lldx%lld: plain ATen fwd+bwd %.1f ms, BRECQ iteration %.1f ms   ratio %.3f   (target <= 1.3)\n",
              unit->name.c_str(), static_cast<long long>(side), static_cast<long long>(side), 1e3 * median(plain),
              1e3 * median(brecq), median(brecq) / median(plain));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> positional;
  int threads = 0, rounds = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if ((a == "--threads" || a == "--rounds") && i + 1 < argc) {
      (a == "--threads" ? threads : rounds) = std::max(a == "--rounds" ? 1 : 0, std::atoi(argv[++i]));
    } else if (a.rfind("-", 0) == 0) {
      std::cerr << "usage: xdq_bench_imagenet FOLDER MODEL.pt [--threads N] [--rounds R]\n";
      return a == "--help" || a == "-h" ? 0 : 2;
    } else {
      positional.push_back(a);
    }
  }
  if (positional.size() != 2) {
    std::cerr << "usage: xdq_bench_imagenet FOLDER MODEL.pt [--threads N] [--rounds R]\n";
    return 2;
  }
  try {
    return run(positional[0], positional[1], threads, rounds);
  } catch (const std::exception& e) {
    std::cerr << "xdq_bench_imagenet: error: " << e.what() << std::endl;
    return 1;
  }
}
