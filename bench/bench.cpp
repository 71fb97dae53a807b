// Speed ratios, measured side by side in one run (rounds interleaved, medians compared):
//   1. W8A8 fake-quantized evaluation throughput / FP32 TorchScript evaluation throughput (batch 256);
//   2. time to calibrate all activation ranges with kl or mse on 1 024 images / one FP32 forward pass
//      over the same 1 024 images;
//   3. one BRECQ reconstruction iteration of ResNet-20's layer1.block0 (batch 32: sampling, soft-rounded
//      weights, forward, loss, backward, Adam) / a plain forward + backward of the same block written
//      directly with ATen ops (conv, relu, conv, add, relu; MSE loss);
//   4. layerwise analysis (each of the 22 layers quantized alone, error at the output) over 1 000 images
//      / one FP32 forward pass over them (the bound is 1 + 22: one pass per layer plus the FP32 pass);
//   5. one synthesis iteration with zeroq's and deepinversion's losses (batch 64: forward with the BN
//      inputs captured, BN-statistic loss, backward to the images, Adam) / a forward + backward w.r.t.
//      the images of the TorchScript module itself (parameters frozen), same batch;
//   6. calibrating all activation ranges with mse on 1 024 images with the statistics cache cold
//      (the model runs over the images, statistics written to disk) / warm (statistics read back), as
//      when an experiment is re-run with another calibrator.
// The floors are measured in both memory layouts, contiguous (NCHW) and channels-last (NHWC), and
// evaluation throughput is also given in GFLOP/s beside the GFLOP/s of a large 3x3 convolution here.
// Usage: xdq_bench [MODEL.pt] [--threads N] [--rounds R] [--device cpu|cuda[:N]]
// On a GPU every measurement runs there (inputs read on the CPU and moved per batch, as in an experiment),
// the device's queued work inside each timing; the layerwise analysis is measured on the CPU only.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <stdexcept>
#include <sstream>
#include <functional>
#include <string>
#include <vector>

#include <ATen/core/grad_mode.h>
#include <torch/csrc/jit/serialization/import.h>

#include "xdq/data/fashion_mnist.h"
#include "xdq/ir/import.h"
#include "xdq/ir/passes.h"
#include "xdq/parallel.h"
#include "xdq/analysis/analysis.h"
#include "xdq/plugin/quantize.h"
#include "xdq/quant/ptq.h"
#include "xdq/quant/reconstruction.h"
#include "xdq/quant/statistics_cache.h"
#include "xdq/synthesis/synthesis.h"

#include "bench_util.h"

using namespace xdq;

using bench::median;
using bench::seconds;

constexpr const char* kUsage =
    "usage: xdq_bench [--threads N] [--rounds R] [--device D] [MODEL.pt]\n"
    "  xdq against its floors (plain ATen / TorchScript), side by side in one run; ratios printed.\n"
    "  --threads N  intra-op threads (0: all cores; default 0)\n"
    "  --rounds R   rounds per measurement, median reported (default 7)\n"
    "  --device D   cpu (default), cuda or cuda:N\n"
    "  MODEL.pt     TorchScript model (default: the zoo's ResNet-20)\n";

int run_bench(std::string model_path, int threads, int rounds, const c10::Device& device);

int main(int argc, char** argv) {
  std::string model_path = std::string(XDQ_SOURCE_DIR) + "/models/resnet20_fmnist/model.pt";
  int threads = 0, rounds = 7;
  std::string device = "cpu";
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--help" || a == "-h") {
        std::cout << kUsage;
        return 0;
      }
      if (a == "--device" && i + 1 < argc) {
        device = argv[++i];
      } else if ((a == "--threads" || a == "--rounds") && i + 1 < argc) {
        const int value = std::stoi(argv[++i]);
        if (value < (a == "--rounds" ? 1 : 0)) throw std::invalid_argument(a + " out of range");
        (a == "--threads" ? threads : rounds) = value;
      } else if (a.rfind("-", 0) == 0) {
        std::cerr << "xdq_bench: unknown option " << a << "\n" << kUsage;
        return 2;
      } else {
        model_path = a;
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "xdq_bench: bad number (" << e.what() << ")\n" << kUsage;
    return 2;
  }
  try {
    const c10::Device d(device);
    if (!d.is_cpu() && !at::hasCUDA()) throw std::runtime_error("--device " + device + ": this LibTorch has no CUDA");
    return run_bench(model_path, threads, rounds, d);
  } catch (const std::exception& e) {
    std::cerr << "xdq_bench: error: " << e.what() << std::endl;
    return 1;
  }
}

int run_bench(std::string model_path, int threads, int rounds, const c10::Device& device) {
  threads = apply_thread_count(threads);
  auto& registry = global_registry();
  registry.scan(plugin_search_dirs());

  ImportedModel model = import_torchscript(model_path);
  model.graph.to(device);
  torch::jit::Module module = torch::jit::load(model_path);
  module.eval();
  module.to(device);
  const Dataset test = load_fashion_mnist(fashion_mnist_dir(), Split::Test);
  const at::Tensor eval_images = model.preprocess.apply(test.images.slice(0, 0, 2048));
  const at::Tensor calib_images = model.preprocess.apply(load_fashion_mnist(fashion_mnist_dir(), Split::Train).subset(1024, 0).images);
  const std::int64_t batch = 256;

  Graph folded = model.graph;
  fold_batch_norm(folded);
  PtqSettings settings;
  settings.scheme = Scheme::load("academic", config_dir() + "/presets");
  const std::string cache_dir = (std::filesystem::temp_directory_path() / ("xdq_bench_" + std::to_string(getpid()))).string();
  std::ostringstream cache_log;
  // Calibration with a cache: every call of a fresh cache object reads the file if it exists.
  auto quantize_with_cache = [&](const std::string& calibrator_name) {
    QuantizedModel q(folded, settings);
    const PluginRecord& plugin = registry.get(PluginKind::Calibrator, calibrator_name);
    StatisticsCache cache(cache_dir);
    calibrate_from_statistics(q, registry.load<Calibrator>(calibrator_name, default_options(plugin.options)),
                              *cache.get(q, calib_images, batch, 2048, cache_log));
    return q;
  };
  auto quantize_with = [&](const std::string& calibrator_name) {
    std::filesystem::remove_all(cache_dir);
    return quantize_with_cache(calibrator_name);
  };
  QuantizedModel w8a8 = quantize_with("minmax");
  w8a8.set_weight_ranges("minmax");
  w8a8.round_to_nearest();
  const Executor quant_exec = w8a8.executor();
  Executor quant_exec_nhwc = w8a8.executor();
  quant_exec_nhwc.use_channels_last();

  at::NoGradGuard no_grad;
  auto run_batches = [&](const at::Tensor& images, const std::function<at::Tensor(const at::Tensor&)>& f) {
    for (std::int64_t b = 0; b < images.size(0); b += batch) f(images.slice(0, b, std::min(images.size(0), b + batch)));
  };
  auto fp32_forward = [&](const at::Tensor& x) { return module.forward({x.to(device)}).toTensor(); };
  auto fp32_forward_nhwc = [&](const at::Tensor& x) {
    return module.forward({x.to(device).contiguous(at::MemoryFormat::ChannelsLast)}).toTensor();
  };
  auto timed = [&](const std::function<void()>& f) { return seconds(f, device); };
  auto quant_forward = [&](const at::Tensor& x) { return quant_exec.forward(x); };
  auto quant_forward_nhwc = [&](const at::Tensor& x) { return quant_exec_nhwc.forward(x); };

  // Warm-up (oneDNN primitive caches, allocator).
  run_batches(eval_images, fp32_forward);
  run_batches(eval_images, quant_forward);
  run_batches(eval_images, fp32_forward_nhwc);
  run_batches(eval_images, quant_forward_nhwc);

  // Reconstruction: the engine's own timing of its rounding loop on one block, against the same block in ATen.
  QuantizedModel w4a4 = [&] {
    PtqSettings s4 = settings;
    s4.w_bits = s4.a_bits = 4;
    QuantizedModel q(folded, s4);
    q.set_weight_ranges("mse");
    return q;
  }();
  const auto units = reconstruction_units(folded, Granularity::Block);
  const auto unit = std::find_if(units.begin(), units.end(), [](const ReconstructionUnit& u) { return u.name == "layer1.block0"; });
  if (unit == units.end() || unit->layers.size() != 2) {
    std::fprintf(stderr, "xdq_bench: %s has no two-conv block 'layer1.block0'\n", model_path.c_str());
    return 1;
  }
  const bench::PlainBlock block(folded, *unit, 32, 28);
  const bench::PlainBlock block_nhwc(folded, *unit, 32, 28, at::MemoryFormat::ChannelsLast);
  const std::int64_t recon_iters = 100;
  auto recon_step_seconds = [&] {
    return bench::reconstruction_iteration_seconds(w4a4, calib_images.slice(0, 0, 256), "layer1.block0", recon_iters);
  };

  // Synthesis: the engine run for 1 and for 1 + kSynthIters steps; the difference is kSynthIters iterations.
  constexpr std::int64_t kSynthBatch = 64, kSynthIters = 10;
  for (at::Tensor p : module.parameters()) p.requires_grad_(false);
  const std::vector<SynthesisModel> synth_models{{"resnet20", &model.graph, model.preprocess, {1, 28, 28}}};
  auto synth_step_seconds = [&](const std::string& method) {
    return bench::synthesis_iteration_seconds(synth_models, {1, 28, 28}, kSynthBatch, kSynthIters,
                                              bench::synthesis_defaults(registry, method), device);
  };
  const at::Tensor synth_input = eval_images.slice(0, 0, kSynthBatch).to(device);
  auto plain_synth_step = [&](at::MemoryFormat format) {
    at::AutoGradMode grad(true);
    const at::Tensor x = synth_input.clone(format).requires_grad_(true);
    module.forward({x}).toTensor().sum().backward();
  };

  const at::Tensor analysis_images = eval_images.slice(0, 0, 1000);
  const at::Tensor analysis_labels = test.labels.slice(0, 0, 1000);

  std::vector<double> fp32_eval, quant_eval, fp32_calib_pass, kl_calib, mse_calib, recon_iter, plain_iter, layerwise,
      fp32_analysis_pass, mse_calib_warm, zeroq_iter, deepinversion_iter, plain_synth_iter, fp32_eval_nhwc, quant_eval_nhwc,
      plain_iter_nhwc, plain_synth_iter_nhwc, peak_nchw, peak_nhwc;
  auto per_iteration = [&](std::int64_t n, const std::function<void()>& step) {
    return timed([&] {
             for (std::int64_t i = 0; i < n; ++i) step();
           }) /
           static_cast<double>(n);
  };
  for (int r = 0; r < rounds; ++r) {
    fp32_eval.push_back(timed([&] { run_batches(eval_images, fp32_forward); }));
    quant_eval.push_back(timed([&] { run_batches(eval_images, quant_forward); }));
    fp32_eval_nhwc.push_back(timed([&] { run_batches(eval_images, fp32_forward_nhwc); }));
    quant_eval_nhwc.push_back(timed([&] { run_batches(eval_images, quant_forward_nhwc); }));
    peak_nchw.push_back(bench::conv_peak_gflops(at::MemoryFormat::Contiguous, device));
    peak_nhwc.push_back(bench::conv_peak_gflops(at::MemoryFormat::ChannelsLast, device));
    fp32_calib_pass.push_back(timed([&] { run_batches(calib_images, fp32_forward); }));
    kl_calib.push_back(timed([&] { quantize_with("kl"); }));
    mse_calib.push_back(timed([&] { quantize_with("mse"); }));
    mse_calib_warm.push_back(timed([&] { quantize_with_cache("mse"); }));  // reads what the cold call wrote
    recon_iter.push_back(recon_step_seconds());
    fp32_analysis_pass.push_back(timed([&] { run_batches(analysis_images, fp32_forward); }));
    if (device.is_cpu())
      layerwise.push_back(seconds([&] { layerwise_errors(w8a8, LayerwiseMode::Both, analysis_images, analysis_labels, batch); }));
    plain_iter.push_back(per_iteration(recon_iters, [&] { block.step(); }));
    plain_iter_nhwc.push_back(per_iteration(recon_iters, [&] { block_nhwc.step(); }));
    zeroq_iter.push_back(synth_step_seconds("zeroq"));
    deepinversion_iter.push_back(synth_step_seconds("deepinversion"));
    plain_synth_iter.push_back(per_iteration(kSynthIters, [&] { plain_synth_step(at::MemoryFormat::Contiguous); }));
    plain_synth_iter_nhwc.push_back(per_iteration(kSynthIters, [&] { plain_synth_step(at::MemoryFormat::ChannelsLast); }));
  }
  const double n_eval = static_cast<double>(eval_images.size(0));
  std::printf("model %s, device %s, threads %d, rounds %d (medians)\n", model_path.c_str(), device.str().c_str(), threads,
              rounds);
  const double gflop = bench::flops_per_image(folded, eval_images.slice(0, 0, 1)) / 1e9;
  auto rate = [&](const std::vector<double>& t) { return n_eval / median(t); };
  std::printf("FP32 TorchScript eval      %8.0f img/s (%5.1f GFLOP/s); channels-last input %8.0f img/s (%5.1f GFLOP/s)\n",
              rate(fp32_eval), rate(fp32_eval) * gflop, rate(fp32_eval_nhwc), rate(fp32_eval_nhwc) * gflop);
  std::printf("W8A8 fake-quant eval       %8.0f img/s (%5.1f GFLOP/s); channels-last %8.0f img/s (%5.1f GFLOP/s)\n",
              rate(quant_eval), rate(quant_eval) * gflop, rate(quant_eval_nhwc), rate(quant_eval_nhwc) * gflop);
  std::printf("  peak here: 3x3 conv 256->256, 56x56, batch 16: %.0f GFLOP/s NCHW, %.0f GFLOP/s NHWC (%.3f GFLOP per image)\n",
              median(peak_nchw), median(peak_nhwc), gflop);
  std::printf("  ratio quant/fp32 throughput   %.3f   (target >= 0.85)\n", median(fp32_eval) / median(quant_eval));
  std::printf("FP32 forward, 1024 images  %8.3f s\n", median(fp32_calib_pass));
  std::printf("kl calibration, 1024 images  %6.3f s   ratio %.3f   (target <= 2)\n", median(kl_calib),
              median(kl_calib) / median(fp32_calib_pass));
  std::printf("mse calibration, 1024 images %6.3f s   ratio %.3f   (target <= 2)\n", median(mse_calib),
              median(mse_calib) / median(fp32_calib_pass));
  std::printf("block layer1.block0, batch 32: plain ATen fwd+bwd %.2f ms (NCHW), %.2f ms (NHWC); BRECQ iteration %.2f ms   "
              "ratio to the NCHW floor %.3f (target <= 0.65), to the NHWC floor %.3f\n",
              1e3 * median(plain_iter), 1e3 * median(plain_iter_nhwc), 1e3 * median(recon_iter),
              median(recon_iter) / median(plain_iter), median(recon_iter) / median(plain_iter_nhwc));
  if (!layerwise.empty())
    std::printf("layerwise analysis, %zu layers, 1000 images: %.3f s / FP32 pass %.3f s   ratio %.2f   (bound %zu)\n",
                w8a8.layers().size(), median(layerwise), median(fp32_analysis_pass),
                median(layerwise) / median(fp32_analysis_pass), w8a8.layers().size() + 1);
  std::printf("synthesis, batch %lld: TorchScript fwd+bwd to the images %.2f ms (NCHW), %.2f ms (NHWC input); zeroq "
              "iteration %.2f ms   ratio %.3f; deepinversion iteration %.2f ms   ratio %.3f   (to the NCHW floor; target <= 0.7)\n",
              static_cast<long long>(kSynthBatch), 1e3 * median(plain_synth_iter), 1e3 * median(plain_synth_iter_nhwc),
              1e3 * median(zeroq_iter), median(zeroq_iter) / median(plain_synth_iter), 1e3 * median(deepinversion_iter),
              median(deepinversion_iter) / median(plain_synth_iter));
  std::printf("mse calibration, 1024 images: statistics cache cold %.3f s, warm %.3f s   speed-up %.1f   (target >= 5)\n",
              median(mse_calib), median(mse_calib_warm), median(mse_calib) / median(mse_calib_warm));
  std::filesystem::remove_all(cache_dir);
  return 0;
}
