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
#include <memory>
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

namespace {

// The model's columns (index 0: contiguous NCHW, 1: channels-last NHWC, 2: NHWC with Winograd
// convolutions where this CPU has them): every engine runs as the graph it is given says, and every
// measurement below is taken in each column.
const char* const kLayoutNames[3] = {"NCHW", "NHWC", "NHWC+Winograd"};
const at::MemoryFormat kFormats[3] = {at::MemoryFormat::Contiguous, at::MemoryFormat::ChannelsLast, at::MemoryFormat::ChannelsLast};
const ConvAlgorithm kConvs[3] = {ConvAlgorithm::Direct, ConvAlgorithm::Direct, ConvAlgorithm::Winograd};
constexpr std::int64_t kBatch = 256, kReconIters = 100, kSynthBatch = 64, kSynthIters = 10;

// Per column: evaluation, reconstruction and synthesis timings, one entry per round.
struct Timings {
  std::vector<double> module_eval, fp32_eval, quant_eval, peak, plain_block, block_convolutions, brecq_weights,
      brecq_steps, qdrop, plain_synth, zeroq, deepinversion;
};

// The workloads, set up once and measured in every round. Not movable: the synthesis models point
// into `graphs`.
class Bench {
 public:
  Bench(std::string model_path, const c10::Device& device, PluginRegistry& registry);
  Bench(const Bench&) = delete;
  ~Bench() { std::filesystem::remove_all(cache_dir_); }
  void measure_round();
  void report(int threads, int rounds) const;

 private:
  void load_columns();
  void prepare_workloads();
  QuantizedModel calibrated_with_cache(const PtqSettings& s, const std::string& calibrator) const;
  QuantizedModel calibrated_with(const std::string& calibrator) const;
  QuantizedModel in_layout(const QuantizedModel& q, int l) const;
  void run_batches(const at::Tensor& images, const std::function<at::Tensor(const at::Tensor&)>& f) const;
  std::function<at::Tensor(const at::Tensor&)> module_forward(int l) const;
  std::function<at::Tensor(const at::Tensor&)> exec_forward(const std::vector<Executor>& e, int l) const;
  double timed(const std::function<void()>& f) const { return seconds(f, device_); }
  double per_iteration(std::int64_t n, const std::function<void()>& step) const;
  void measure_column(int l);
  void print_evaluation() const;
  void print_iterations() const;

  std::string model_path_;
  c10::Device device_;
  PluginRegistry& registry_;
  int layouts_;
  ImportedModel model_;
  std::vector<Graph> graphs_, folded_;
  mutable std::vector<torch::jit::Module> modules_;  // forward() is not const
  Dataset test_;
  at::Tensor eval_images_, calib_images_, analysis_images_, analysis_labels_, synth_input_;
  PtqSettings settings_;
  std::string cache_dir_;
  mutable std::ostringstream cache_log_;
  std::unique_ptr<QuantizedModel> w8a8_, w4a4_;
  std::vector<Executor> fp32_exec_, quant_exec_;
  ReconstructionUnit unit_;
  ReconstructionOptions brecq_, qdrop_;
  std::vector<bench::PlainBlock> blocks_;
  std::vector<std::vector<SynthesisModel>> synth_models_;
  Timings t_[3];
  std::vector<double> fp32_calib_pass_, kl_calib_, mse_calib_, layerwise_, fp32_analysis_pass_, mse_calib_warm_;
};

Bench::Bench(std::string model_path, const c10::Device& device, PluginRegistry& registry)
    : model_path_(std::move(model_path)),
      device_(device),
      registry_(registry),
      layouts_(device.is_cpu() && winograd_on_this_cpu() ? 3 : 2),
      model_(import_torchscript(model_path_)),
      cache_dir_((std::filesystem::temp_directory_path() / ("xdq_bench_" + std::to_string(getpid()))).string()) {
  load_columns();
  prepare_workloads();
}

// The graph, its BN-folded copy and the TorchScript module itself in each column; the module's
// parameters are converted (a channels-last input alone does not make a one-channel model run NHWC: its
// first convolution's output follows the weights).
void Bench::load_columns() {
  model_.graph.to(device_);
  graphs_.assign(layouts_, model_.graph);
  folded_.resize(layouts_);
  for (int l = 0; l < layouts_; ++l) {
    graphs_[l].channels_last = kFormats[l] == at::MemoryFormat::ChannelsLast;
    graphs_[l].convolution = kConvs[l];
    folded_[l] = graphs_[l];
    fold_batch_norm(folded_[l]);
    modules_.push_back(torch::jit::load(model_path_));
    modules_[l].eval();
    modules_[l].to(device_);
    for (at::Tensor p : modules_[l].parameters()) {
      if (p.dim() == 4) p.set_data(p.contiguous(kFormats[l]));
      p.requires_grad_(false);
    }
  }
}

void Bench::prepare_workloads() {
  test_ = load_fashion_mnist(fashion_mnist_dir(), Split::Test);
  eval_images_ = model_.preprocess.apply(test_.images.slice(0, 0, 2048));
  calib_images_ = model_.preprocess.apply(load_fashion_mnist(fashion_mnist_dir(), Split::Train).subset(1024, 0).images);
  analysis_images_ = eval_images_.slice(0, 0, 1000);
  analysis_labels_ = test_.labels.slice(0, 0, 1000);
  settings_.scheme = Scheme::load("academic", config_dir() + "/presets");
  w8a8_ = std::make_unique<QuantizedModel>(calibrated_with("minmax"));
  w8a8_->round_to_nearest();
  for (int l = 0; l < layouts_; ++l) {
    fp32_exec_.emplace_back(folded_[l]);
    quant_exec_.push_back(in_layout(*w8a8_, l).executor());
  }
  // Reconstruction: the engine's own timing of its loops on one block, against the same block in ATen;
  // BRECQ's and QDrop's defaults, W4A4 (activations calibrated with minmax, weights with mse).
  PtqSettings s4 = settings_;
  s4.w_bits = s4.a_bits = 4;
  std::filesystem::remove_all(cache_dir_);
  s4.weight_range = "mse";
  w4a4_ = std::make_unique<QuantizedModel>(calibrated_with_cache(s4, "minmax"));
  const auto units = reconstruction_units(folded_[0], Granularity::Block);
  const auto unit = std::find_if(units.begin(), units.end(), [](const ReconstructionUnit& u) { return u.name == "layer1.block0"; });
  if (unit == units.end() || unit->layers.size() != 2)
    throw std::runtime_error(model_path_ + " has no two-conv block 'layer1.block0'");
  unit_ = *unit;
  brecq_ = bench::reconstruction_defaults(registry_, "brecq", kReconIters);
  qdrop_ = bench::reconstruction_defaults(registry_, "qdrop", kReconIters);
  // Synthesis: the engine run for 1 and for 1 + kSynthIters steps; the difference is kSynthIters iterations.
  for (int l = 0; l < layouts_; ++l) {
    blocks_.emplace_back(folded_[0], unit_, 32, 28, kFormats[l], kConvs[l]);
    synth_models_.push_back({{"resnet20", &graphs_[l], model_.preprocess, {1, 28, 28}}});
  }
  synth_input_ = eval_images_.slice(0, 0, kSynthBatch).to(device_);
  // Warm-up (oneDNN primitive caches, allocator).
  at::NoGradGuard no_grad;
  for (int l = 0; l < layouts_; ++l) {
    run_batches(eval_images_, module_forward(l));
    run_batches(eval_images_, exec_forward(fp32_exec_, l));
    run_batches(eval_images_, exec_forward(quant_exec_, l));
  }
}

// The recipe's calibration stage (activation and weight ranges) with `calibrator` on the calibration
// images; statistics from a cache that every call of a fresh cache object reads if its file exists.
QuantizedModel Bench::calibrated_with_cache(const PtqSettings& s, const std::string& calibrator) const {
  RecipeSettings recipe;
  recipe.ptq = s;
  recipe.calibrator = registry_.default_choice(PluginKind::Calibrator, calibrator);
  recipe.rounding = registry_.default_choice(PluginKind::WeightOptimizer, "nearest");
  recipe.batch_size = kBatch;
  recipe.device = device_;
  StatisticsCache cache(cache_dir_);
  return QuantizeRecipe(registry_, recipe, cache_log_).calibrated(folded_[0], {calib_images_, {}, &cache});
}

QuantizedModel Bench::calibrated_with(const std::string& calibrator) const {
  std::filesystem::remove_all(cache_dir_);
  return calibrated_with_cache(settings_, calibrator);
}

// A calibrated model in column l: the NCHW model's quantizers on the graph of column l.
QuantizedModel Bench::in_layout(const QuantizedModel& q, int l) const {
  QuantizedModel out = q;
  out.graph_for_rewrite().channels_last = kFormats[l] == at::MemoryFormat::ChannelsLast;
  out.graph_for_rewrite().convolution = kConvs[l];
  return out;
}

void Bench::run_batches(const at::Tensor& images, const std::function<at::Tensor(const at::Tensor&)>& f) const {
  for (std::int64_t b = 0; b < images.size(0); b += kBatch) f(images.slice(0, b, std::min(images.size(0), b + kBatch)));
}

std::function<at::Tensor(const at::Tensor&)> Bench::module_forward(int l) const {
  return [this, l](const at::Tensor& x) {
    return modules_[l].forward({x.to(device_).contiguous(kFormats[l])}).toTensor();
  };
}

std::function<at::Tensor(const at::Tensor&)> Bench::exec_forward(const std::vector<Executor>& e, int l) const {
  return [&e, l](const at::Tensor& x) { return e[l].forward(x); };
}

double Bench::per_iteration(std::int64_t n, const std::function<void()>& step) const {
  return timed([&] {
           for (std::int64_t i = 0; i < n; ++i) step();
         }) /
         static_cast<double>(n);
}

void Bench::measure_column(int l) {
  at::NoGradGuard no_grad;
  Timings& t = t_[l];
  t.module_eval.push_back(timed([&] { run_batches(eval_images_, module_forward(l)); }));
  t.fp32_eval.push_back(timed([&] { run_batches(eval_images_, exec_forward(fp32_exec_, l)); }));
  t.quant_eval.push_back(timed([&] { run_batches(eval_images_, exec_forward(quant_exec_, l)); }));
  t.peak.push_back(bench::conv_peak_gflops(kFormats[l], device_, 5, kConvs[l]));
  t.plain_block.push_back(per_iteration(kReconIters, [&] { blocks_[l].step(); }));
  t.block_convolutions.push_back(per_iteration(kReconIters, [&] { blocks_[l].convolution_passes(); }));
  const at::Tensor calibration = calib_images_.slice(0, 0, 256);
  const bench::IterationSeconds b = bench::reconstruction_iteration_seconds(in_layout(*w4a4_, l), calibration, unit_.name, brecq_);
  t.brecq_weights.push_back(b.weights);
  t.brecq_steps.push_back(b.steps);
  t.qdrop.push_back(bench::reconstruction_iteration_seconds(in_layout(*w4a4_, l), calibration, unit_.name, qdrop_).weights);
  t.plain_synth.push_back(per_iteration(kSynthIters, [&] {
    at::AutoGradMode grad(true);
    const at::Tensor x = synth_input_.clone(kFormats[l]).requires_grad_(true);
    modules_[l].forward({x}).toTensor().sum().backward();
  }));
  const auto synthesis_step = [&](const std::string& method) {
    return bench::synthesis_iteration_seconds(synth_models_[l], {1, 28, 28}, kSynthBatch, kSynthIters,
                                              bench::synthesis_defaults(registry_, method), device_);
  };
  t.zeroq.push_back(synthesis_step("zeroq"));
  t.deepinversion.push_back(synthesis_step("deepinversion"));
}

void Bench::measure_round() {
  for (int l = 0; l < layouts_; ++l) measure_column(l);
  at::NoGradGuard no_grad;
  fp32_calib_pass_.push_back(timed([&] { run_batches(calib_images_, module_forward(0)); }));
  kl_calib_.push_back(timed([&] { calibrated_with("kl"); }));
  mse_calib_.push_back(timed([&] { calibrated_with("mse"); }));
  mse_calib_warm_.push_back(timed([&] { calibrated_with_cache(settings_, "mse"); }));  // reads what the cold call wrote
  fp32_analysis_pass_.push_back(timed([&] { run_batches(analysis_images_, module_forward(0)); }));
  if (device_.is_cpu())
    layerwise_.push_back(seconds([&] { layerwise_errors(*w8a8_, LayerwiseMode::Both, analysis_images_, analysis_labels_, kBatch); }));
}

// Evaluation: throughput per column, and each against the NCHW TorchScript module.
void Bench::print_evaluation() const {
  const double n_eval = static_cast<double>(eval_images_.size(0));
  const double gflop = bench::flops_per_image(folded_[0], eval_images_.slice(0, 0, 1)) / 1e9;
  std::printf("evaluation, batch 256           img/s (GFLOP/s)");
  for (int l = 0; l < layouts_; ++l) std::printf("  %-20s", kLayoutNames[l]);
  std::printf("\n");
  auto eval_row = [&](const char* name, std::vector<double> Timings::*field) {
    std::printf("  %-28s", name);
    for (int l = 0; l < layouts_; ++l) {
      const Timings& x = t_[l];
      std::printf("  %6.0f (%5.1f) %4.2fx", n_eval / median(x.*field), n_eval / median(x.*field) * gflop,
                  median(t_[0].module_eval) / median(x.*field));
    }
    std::printf("\n");
  };
  eval_row("FP32 TorchScript module", &Timings::module_eval);
  eval_row("FP32 xdq (BN folded)", &Timings::fp32_eval);
  eval_row("W8A8 fake-quant xdq", &Timings::quant_eval);
  std::printf("  (x: throughput over the NCHW TorchScript module's; target >= 1.6)\n");
  std::printf("  peak here: 3x3 conv 256->256, 56x56, batch 16:");
  for (int l = 0; l < layouts_; ++l) std::printf(" %.0f GFLOP/s %s%s", median(t_[l].peak), kLayoutNames[l], l + 1 < layouts_ ? "," : "");
  std::printf(" (%.3f GFLOP per image)\n", gflop);
  double fastest_quant_eval = median(t_[0].quant_eval);
  for (int l = 1; l < layouts_; ++l) fastest_quant_eval = std::min(fastest_quant_eval, median(t_[l].quant_eval));
  std::printf("  ratio quant/fp32 throughput (NCHW module)  %.3f   (target >= 0.85)\n",
              median(t_[0].module_eval) / fastest_quant_eval);
}

// Reconstruction and synthesis: ms per iteration, each against the NCHW floor (the target) and the
// floor of its own column.
void Bench::print_iterations() const {
  auto iteration_row = [&](const char* name, std::vector<double> Timings::*field, std::vector<double> Timings::*floor) {
    std::printf("  %-34s", name);
    for (int l = 0; l < layouts_; ++l)
      std::printf("  %10.2f ms %11.3f %4.3f", 1e3 * median(t_[l].*field), median(t_[l].*field) / median(t_[0].*floor),
                  median(t_[l].*field) / median(t_[l].*floor));
    std::printf("\n");
  };
  auto iteration_header = [&](const std::string& what) {
    std::printf("%-36s", what.c_str());
    for (int l = 0; l < layouts_; ++l) std::printf("  %13s /NCHW floor /own", kLayoutNames[l]);
    std::printf("\n");
  };
  iteration_header("block " + unit_.name + ", batch 32, ms/iteration");
  iteration_row("plain ATen fwd+bwd (floor)", &Timings::plain_block, &Timings::plain_block);
  iteration_row("its five convolution passes alone", &Timings::block_convolutions, &Timings::plain_block);
  // What the memory layout alone buys on this machine: the same five passes, NCHW against NHWC.
  std::printf("    (the five passes in GFLOP/s:");
  for (int l = 0; l < layouts_; ++l)
    std::printf(" %.0f %s%s", blocks_[l].convolution_pass_flops() / median(t_[l].block_convolutions) / 1e9, kLayoutNames[l],
                l + 1 < layouts_ ? "," : ";");
  std::printf(" NHWC / NCHW %.2f)\n", median(t_[0].block_convolutions) / median(t_[1].block_convolutions));
  iteration_row("BRECQ weight iteration", &Timings::brecq_weights, &Timings::plain_block);
  iteration_row("BRECQ activation-step iteration", &Timings::brecq_steps, &Timings::plain_block);
  iteration_row("QDrop iteration", &Timings::qdrop, &Timings::plain_block);
  std::printf("  (target <= 0.65 of the NCHW floor)\n");
  iteration_header("synthesis, batch " + std::to_string(kSynthBatch) + ", ms/iteration");
  iteration_row("TorchScript fwd+bwd to images (floor)", &Timings::plain_synth, &Timings::plain_synth);
  iteration_row("zeroq iteration", &Timings::zeroq, &Timings::plain_synth);
  iteration_row("deepinversion iteration", &Timings::deepinversion, &Timings::plain_synth);
  std::printf("  (target <= 0.7 of the NCHW floor)\n");
}

void Bench::report(int threads, int rounds) const {
  std::printf("model %s, device %s, threads %d, rounds %d (medians)\n", model_path_.c_str(), device_.str().c_str(), threads,
              rounds);
  print_evaluation();
  print_iterations();
  std::printf("FP32 forward, 1024 images  %8.3f s\n", median(fp32_calib_pass_));
  std::printf("kl calibration, 1024 images  %6.3f s   ratio %.3f   (target <= 2)\n", median(kl_calib_),
              median(kl_calib_) / median(fp32_calib_pass_));
  std::printf("mse calibration, 1024 images %6.3f s   ratio %.3f   (target <= 2)\n", median(mse_calib_),
              median(mse_calib_) / median(fp32_calib_pass_));
  if (!layerwise_.empty())
    std::printf("layerwise analysis, %zu layers, 1000 images: %.3f s / FP32 pass %.3f s   ratio %.2f   (bound %zu)\n",
                w8a8_->layers().size(), median(layerwise_), median(fp32_analysis_pass_),
                median(layerwise_) / median(fp32_analysis_pass_), w8a8_->layers().size() + 1);
  std::printf("mse calibration, 1024 images: statistics cache cold %.3f s, warm %.3f s   speed-up %.1f   (target >= 5)\n",
              median(mse_calib_), median(mse_calib_warm_), median(mse_calib_) / median(mse_calib_warm_));
}

}  // namespace

int run_bench(std::string model_path, int threads, int rounds, const c10::Device& device) {
  threads = apply_thread_count(threads);
  auto& registry = global_registry();
  registry.scan(plugin_search_dirs());
  Bench bench(std::move(model_path), device, registry);
  for (int r = 0; r < rounds; ++r) bench.measure_round();
  bench.report(threads, rounds);
  return 0;
}
