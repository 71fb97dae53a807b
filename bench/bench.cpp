// Speed ratios, measured side by side in one run (rounds interleaved, medians compared):
//   1. evaluation throughput (batch 256) of the FP32 TorchScript module, xdq's FP32 executor (BN folded)
//      and its W8A8 fake-quantized executor, each against the NCHW TorchScript module;
//   2. time to calibrate all activation ranges with kl or mse on 1 024 images / one FP32 forward pass
//      over the same 1 024 images;
//   3. one reconstruction iteration of ResNet-20's layer1.block0 (batch 32: sampling, soft-rounded
//      weights, forward, loss, backward, Adam) with BRECQ's defaults (the weight loop and the activation-
//      step loop) and QDrop's / a plain forward + backward of the same block written directly with ATen
//      ops (conv, relu, conv, add, relu; MSE loss); beside them the five convolution passes of that
//      block alone, the part of an iteration no elementwise fusion can remove;
//   4. layerwise analysis (each of the 22 layers quantized alone, error at the output) over 1 000 images
//      / one FP32 forward pass over them (the bound is 1 + 22: one pass per layer plus the FP32 pass);
//   5. one synthesis iteration with zeroq's and deepinversion's losses (batch 64: forward with the BN
//      inputs captured, BN-statistic loss, backward to the images, Adam) / a forward + backward w.r.t.
//      the images of the TorchScript module itself (parameters frozen), same batch;
//   6. calibrating all activation ranges with mse on 1 024 images with the statistics cache cold
//      (the model runs over the images, statistics written to disk) / warm (statistics read back), as
//      when an experiment is re-run with another calibrator.
// 1, 3 and 5 run in both memory layouts, contiguous (NCHW) and channels-last (NHWC), and where oneDNN has
// Winograd kernels on this CPU also channels-last with Winograd convolutions (convolution: winograd): the
// floors, the TorchScript module (its parameters converted) and xdq (memory_format), each ratio against
// the NCHW floor and against its own column's (the Winograd column's block floor convolves with Winograd
// too; TorchScript cannot, so its module is the NHWC one); evaluation is also given in GFLOP/s beside a
// large 3x3 convolution's here.
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

  // The model's columns (index 0: contiguous NCHW, 1: channels-last NHWC, 2: NHWC with Winograd
  // convolutions where this CPU has them): every engine runs as the graph it is given says, and every
  // measurement below is taken in each column.
  const int kLayouts = device.is_cpu() && winograd_on_this_cpu() ? 3 : 2;
  const char* kLayoutNames[3] = {"NCHW", "NHWC", "NHWC+Winograd"};
  const at::MemoryFormat kFormats[3] = {at::MemoryFormat::Contiguous, at::MemoryFormat::ChannelsLast, at::MemoryFormat::ChannelsLast};
  const ConvAlgorithm kConvs[3] = {ConvAlgorithm::Direct, ConvAlgorithm::Direct, ConvAlgorithm::Winograd};
  ImportedModel model = import_torchscript(model_path);
  model.graph.to(device);
  std::vector<Graph> graphs(kLayouts, model.graph), folded(kLayouts);
  for (int l = 0; l < kLayouts; ++l) {
    graphs[l].channels_last = kFormats[l] == at::MemoryFormat::ChannelsLast;
    graphs[l].convolution = kConvs[l];
    folded[l] = graphs[l];
    fold_batch_norm(folded[l]);
  }
  // The TorchScript module itself, its parameters in each layout (a channels-last input alone does not
  // make a one-channel model run NHWC: its first convolution's output follows the weights).
  std::vector<torch::jit::Module> modules;
  for (int l = 0; l < kLayouts; ++l) {
    modules.push_back(torch::jit::load(model_path));
    modules[l].eval();
    modules[l].to(device);
    for (at::Tensor p : modules[l].parameters()) {
      if (p.dim() == 4) p.set_data(p.contiguous(kFormats[l]));
      p.requires_grad_(false);
    }
  }
  const Dataset test = load_fashion_mnist(fashion_mnist_dir(), Split::Test);
  const at::Tensor eval_images = model.preprocess.apply(test.images.slice(0, 0, 2048));
  const at::Tensor calib_images = model.preprocess.apply(load_fashion_mnist(fashion_mnist_dir(), Split::Train).subset(1024, 0).images);
  const std::int64_t batch = 256;

  PtqSettings settings;
  settings.scheme = Scheme::load("academic", config_dir() + "/presets");
  const std::string cache_dir = (std::filesystem::temp_directory_path() / ("xdq_bench_" + std::to_string(getpid()))).string();
  std::ostringstream cache_log;
  // Calibration with a cache: every call of a fresh cache object reads the file if it exists.
  auto quantize_with_cache = [&](const PtqSettings& s, const std::string& calibrator_name) {
    QuantizedModel q(folded[0], s);
    const PluginRecord& plugin = registry.get(PluginKind::Calibrator, calibrator_name);
    StatisticsCache cache(cache_dir);
    calibrate_from_statistics(q, registry.load<Calibrator>(calibrator_name, default_options(plugin.options)),
                              *cache.get(q, calib_images, batch, 2048, cache_log));
    return q;
  };
  auto quantize_with = [&](const std::string& calibrator_name) {
    std::filesystem::remove_all(cache_dir);
    return quantize_with_cache(settings, calibrator_name);
  };
  // A calibrated model in column l: the NCHW model's quantizers on the graph of column l.
  auto in_layout = [&](const QuantizedModel& q, int l) {
    QuantizedModel out = q;
    out.graph_for_rewrite().channels_last = kFormats[l] == at::MemoryFormat::ChannelsLast;
    out.graph_for_rewrite().convolution = kConvs[l];
    return out;
  };
  QuantizedModel w8a8 = quantize_with("minmax");
  w8a8.set_weight_ranges("minmax");
  w8a8.round_to_nearest();
  std::vector<Executor> fp32_exec, quant_exec;
  for (int l = 0; l < kLayouts; ++l) {
    fp32_exec.emplace_back(folded[l]);
    quant_exec.push_back(in_layout(w8a8, l).executor());
  }

  at::NoGradGuard no_grad;
  auto run_batches = [&](const at::Tensor& images, const std::function<at::Tensor(const at::Tensor&)>& f) {
    for (std::int64_t b = 0; b < images.size(0); b += batch) f(images.slice(0, b, std::min(images.size(0), b + batch)));
  };
  auto module_forward = [&](int l) {
    return [&, l](const at::Tensor& x) { return modules[l].forward({x.to(device).contiguous(kFormats[l])}).toTensor(); };
  };
  auto exec_forward = [&](const std::vector<Executor>& e, int l) {
    return [&, l](const at::Tensor& x) { return e[l].forward(x); };
  };
  auto timed = [&](const std::function<void()>& f) { return seconds(f, device); };

  // Warm-up (oneDNN primitive caches, allocator).
  for (int l = 0; l < kLayouts; ++l) {
    run_batches(eval_images, module_forward(l));
    run_batches(eval_images, exec_forward(fp32_exec, l));
    run_batches(eval_images, exec_forward(quant_exec, l));
  }

  // Reconstruction: the engine's own timing of its loops on one block, against the same block in ATen;
  // BRECQ's and QDrop's defaults, W4A4 (activations calibrated with minmax, weights with mse).
  QuantizedModel w4a4 = [&] {
    PtqSettings s4 = settings;
    s4.w_bits = s4.a_bits = 4;
    std::filesystem::remove_all(cache_dir);
    QuantizedModel q = quantize_with_cache(s4, "minmax");
    q.set_weight_ranges("mse");
    return q;
  }();
  const auto units = reconstruction_units(folded[0], Granularity::Block);
  const auto unit = std::find_if(units.begin(), units.end(), [](const ReconstructionUnit& u) { return u.name == "layer1.block0"; });
  if (unit == units.end() || unit->layers.size() != 2) {
    std::fprintf(stderr, "xdq_bench: %s has no two-conv block 'layer1.block0'\n", model_path.c_str());
    return 1;
  }
  const std::int64_t recon_iters = 100;
  const ReconstructionOptions brecq = bench::reconstruction_defaults(registry, "brecq", recon_iters),
                              qdrop = bench::reconstruction_defaults(registry, "qdrop", recon_iters);
  std::vector<bench::PlainBlock> blocks;
  for (int l = 0; l < kLayouts; ++l) blocks.emplace_back(folded[0], *unit, 32, 28, kFormats[l], kConvs[l]);

  // Synthesis: the engine run for 1 and for 1 + kSynthIters steps; the difference is kSynthIters iterations.
  constexpr std::int64_t kSynthBatch = 64, kSynthIters = 10;
  std::vector<std::vector<SynthesisModel>> synth_models;
  for (int l = 0; l < kLayouts; ++l) synth_models.push_back({{"resnet20", &graphs[l], model.preprocess, {1, 28, 28}}});
  auto synth_step_seconds = [&](const std::string& method, int l) {
    return bench::synthesis_iteration_seconds(synth_models[l], {1, 28, 28}, kSynthBatch, kSynthIters,
                                              bench::synthesis_defaults(registry, method), device);
  };
  const at::Tensor synth_input = eval_images.slice(0, 0, kSynthBatch).to(device);
  auto plain_synth_step = [&](int l) {
    at::AutoGradMode grad(true);
    const at::Tensor x = synth_input.clone(kFormats[l]).requires_grad_(true);
    modules[l].forward({x}).toTensor().sum().backward();
  };

  const at::Tensor analysis_images = eval_images.slice(0, 0, 1000);
  const at::Tensor analysis_labels = test.labels.slice(0, 0, 1000);

  // Per layout: evaluation, reconstruction and synthesis timings.
  struct Timings {
    std::vector<double> module_eval, fp32_eval, quant_eval, peak, plain_block, block_convolutions, brecq_weights,
        brecq_steps, qdrop, plain_synth, zeroq, deepinversion;
  };
  Timings t[3];
  std::vector<double> fp32_calib_pass, kl_calib, mse_calib, layerwise, fp32_analysis_pass, mse_calib_warm;
  auto per_iteration = [&](std::int64_t n, const std::function<void()>& step) {
    return timed([&] {
             for (std::int64_t i = 0; i < n; ++i) step();
           }) /
           static_cast<double>(n);
  };
  for (int r = 0; r < rounds; ++r) {
    for (int l = 0; l < kLayouts; ++l) {
      t[l].module_eval.push_back(timed([&] { run_batches(eval_images, module_forward(l)); }));
      t[l].fp32_eval.push_back(timed([&] { run_batches(eval_images, exec_forward(fp32_exec, l)); }));
      t[l].quant_eval.push_back(timed([&] { run_batches(eval_images, exec_forward(quant_exec, l)); }));
      t[l].peak.push_back(bench::conv_peak_gflops(kFormats[l], device, 5, kConvs[l]));
      t[l].plain_block.push_back(per_iteration(recon_iters, [&] { blocks[l].step(); }));
      t[l].block_convolutions.push_back(per_iteration(recon_iters, [&] { blocks[l].convolution_passes(); }));
      const bench::IterationSeconds b = bench::reconstruction_iteration_seconds(in_layout(w4a4, l), calib_images.slice(0, 0, 256),
                                                                                 unit->name, brecq);
      t[l].brecq_weights.push_back(b.weights);
      t[l].brecq_steps.push_back(b.steps);
      t[l].qdrop.push_back(
          bench::reconstruction_iteration_seconds(in_layout(w4a4, l), calib_images.slice(0, 0, 256), unit->name, qdrop).weights);
      t[l].plain_synth.push_back(per_iteration(kSynthIters, [&] { plain_synth_step(l); }));
      t[l].zeroq.push_back(synth_step_seconds("zeroq", l));
      t[l].deepinversion.push_back(synth_step_seconds("deepinversion", l));
    }
    fp32_calib_pass.push_back(timed([&] { run_batches(calib_images, module_forward(0)); }));
    kl_calib.push_back(timed([&] { quantize_with("kl"); }));
    mse_calib.push_back(timed([&] { quantize_with("mse"); }));
    mse_calib_warm.push_back(timed([&] { quantize_with_cache(settings, "mse"); }));  // reads what the cold call wrote
    fp32_analysis_pass.push_back(timed([&] { run_batches(analysis_images, module_forward(0)); }));
    if (device.is_cpu())
      layerwise.push_back(seconds([&] { layerwise_errors(w8a8, LayerwiseMode::Both, analysis_images, analysis_labels, batch); }));
  }
  std::printf("model %s, device %s, threads %d, rounds %d (medians)\n", model_path.c_str(), device.str().c_str(), threads,
              rounds);
  const double n_eval = static_cast<double>(eval_images.size(0));
  const double gflop = bench::flops_per_image(folded[0], eval_images.slice(0, 0, 1)) / 1e9;
  // Evaluation: throughput per layout, and each against the NCHW TorchScript module.
  std::printf("evaluation, batch 256           img/s (GFLOP/s)");
  for (int l = 0; l < kLayouts; ++l) std::printf("  %-20s", kLayoutNames[l]);
  std::printf("\n");
  auto eval_row = [&](const char* name, std::vector<double> Timings::*field) {
    std::printf("  %-28s", name);
    for (int l = 0; l < kLayouts; ++l) {
      const Timings& x = t[l];
      std::printf("  %6.0f (%5.1f) %4.2fx", n_eval / median(x.*field), n_eval / median(x.*field) * gflop,
                  median(t[0].module_eval) / median(x.*field));
    }
    std::printf("\n");
  };
  eval_row("FP32 TorchScript module", &Timings::module_eval);
  eval_row("FP32 xdq (BN folded)", &Timings::fp32_eval);
  eval_row("W8A8 fake-quant xdq", &Timings::quant_eval);
  std::printf("  (x: throughput over the NCHW TorchScript module's; target >= 1.6)\n");
  std::printf("  peak here: 3x3 conv 256->256, 56x56, batch 16:");
  for (int l = 0; l < kLayouts; ++l) std::printf(" %.0f GFLOP/s %s%s", median(t[l].peak), kLayoutNames[l], l + 1 < kLayouts ? "," : "");
  std::printf(" (%.3f GFLOP per image)\n", gflop);
  double fastest_quant_eval = median(t[0].quant_eval);
  for (int l = 1; l < kLayouts; ++l) fastest_quant_eval = std::min(fastest_quant_eval, median(t[l].quant_eval));
  std::printf("  ratio quant/fp32 throughput (NCHW module)  %.3f   (target >= 0.85)\n",
              median(t[0].module_eval) / fastest_quant_eval);
  // Reconstruction and synthesis: ms per iteration, each against the NCHW floor (the target) and the
  // floor of its own layout.
  auto iteration_row = [&](const char* name, std::vector<double> Timings::*field, std::vector<double> Timings::*floor) {
    std::printf("  %-34s", name);
    for (int l = 0; l < kLayouts; ++l)
      std::printf("  %10.2f ms %11.3f %4.3f", 1e3 * median(t[l].*field), median(t[l].*field) / median(t[0].*floor),
                  median(t[l].*field) / median(t[l].*floor));
    std::printf("\n");
  };
  auto iteration_header = [&](const std::string& what) {
    std::printf("%-36s", what.c_str());
    for (int l = 0; l < kLayouts; ++l) std::printf("  %13s /NCHW floor /own", kLayoutNames[l]);
    std::printf("\n");
  };
  iteration_header("block " + unit->name + ", batch 32, ms/iteration");
  iteration_row("plain ATen fwd+bwd (floor)", &Timings::plain_block, &Timings::plain_block);
  iteration_row("its five convolution passes alone", &Timings::block_convolutions, &Timings::plain_block);
  // What the memory layout alone buys on this machine: the same five passes, NCHW against NHWC.
  std::printf("    (the five passes in GFLOP/s:");
  for (int l = 0; l < kLayouts; ++l)
    std::printf(" %.0f %s%s", blocks[l].convolution_pass_flops() / median(t[l].block_convolutions) / 1e9, kLayoutNames[l],
                l + 1 < kLayouts ? "," : ";");
  std::printf(" NHWC / NCHW %.2f)\n", median(t[0].block_convolutions) / median(t[1].block_convolutions));
  iteration_row("BRECQ weight iteration", &Timings::brecq_weights, &Timings::plain_block);
  iteration_row("BRECQ activation-step iteration", &Timings::brecq_steps, &Timings::plain_block);
  iteration_row("QDrop iteration", &Timings::qdrop, &Timings::plain_block);
  std::printf("  (target <= 0.65 of the NCHW floor)\n");
  iteration_header("synthesis, batch " + std::to_string(kSynthBatch) + ", ms/iteration");
  iteration_row("TorchScript fwd+bwd to images (floor)", &Timings::plain_synth, &Timings::plain_synth);
  iteration_row("zeroq iteration", &Timings::zeroq, &Timings::plain_synth);
  iteration_row("deepinversion iteration", &Timings::deepinversion, &Timings::plain_synth);
  std::printf("  (target <= 0.7 of the NCHW floor)\n");
  std::printf("FP32 forward, 1024 images  %8.3f s\n", median(fp32_calib_pass));
  std::printf("kl calibration, 1024 images  %6.3f s   ratio %.3f   (target <= 2)\n", median(kl_calib),
              median(kl_calib) / median(fp32_calib_pass));
  std::printf("mse calibration, 1024 images %6.3f s   ratio %.3f   (target <= 2)\n", median(mse_calib),
              median(mse_calib) / median(fp32_calib_pass));
  if (!layerwise.empty())
    std::printf("layerwise analysis, %zu layers, 1000 images: %.3f s / FP32 pass %.3f s   ratio %.2f   (bound %zu)\n",
                w8a8.layers().size(), median(layerwise), median(fp32_analysis_pass),
                median(layerwise) / median(fp32_analysis_pass), w8a8.layers().size() + 1);
  std::printf("mse calibration, 1024 images: statistics cache cold %.3f s, warm %.3f s   speed-up %.1f   (target >= 5)\n",
              median(mse_calib), median(mse_calib_warm), median(mse_calib) / median(mse_calib_warm));
  std::filesystem::remove_all(cache_dir);
  return 0;
}
