// The device an experiment runs on (device: cpu | cuda | cuda:N). On a machine without CUDA the GPU
// comparisons are skipped with the reason printed (tools/gpu-check.sh runs them where there is a GPU);
// the CPU checks and the refusal of CUDA run everywhere.
#include <gtest/gtest.h>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include <ATen/Context.h>
#include <torch/version.h>

#include "test_util.h"
#include "xdq/exec/executor.h"
#include "xdq/experiment/config.h"
#include "xdq/experiment/load.h"

namespace xdq::test {
namespace {

const std::string kQuickstart = std::string(XDQ_SOURCE_DIR) + "/experiments/quickstart.yaml";

// Top-1 per run id of a small quickstart on `device` (W4A4, mse and minmax, 256 calibration images,
// 2 000 test images; BRECQ at W2A4 when `brecq`).
std::map<std::string, double> quickstart_top1(const std::string& device, const std::string& out, bool brecq = false) {
  std::string sets = " --set device=" + device +
                     " --set calibration.count=256 --set test.count=2000 --set 'quantization.calibrators=[minmax, mse]'"
                     " --set 'quantization.bits=[w4a4]'";
  if (brecq)
    sets = " --set device=" + device +
           " --set calibration.count=256 --set test.count=2000 --set 'quantization.calibrators=[mse]'"
           " --set 'quantization.bits=[w2a4]' --set 'quantization.rounding=[{name: brecq, iters: 200, batch_size: 32}]'";
  const CommandResult r = run_command(std::string(XDQ_BINARY) + " run " + kQuickstart + " --out " + out + " --quiet" + sets);
  if (r.exit_code != 0) throw std::runtime_error(r.output);
  std::ifstream in(out + "/results.json");
  std::map<std::string, double> top1;
  const nlohmann::json results = nlohmann::json::parse(in);  // kept alive: a loop over parse(in).at(...) reads freed memory
  for (const auto& run : results.at("runs")) top1[run.at("id")] = run.at("results")[0].at("quant_top1");
  if (top1.empty()) throw std::runtime_error(out + "/results.json has no runs");
  return top1;
}

// device: cpu named explicitly is the default: the same numbers to the last digit.
TEST(Device, ExplicitCpuGivesTheDefaultsResults) {
  TempDir dir;
  PluginRegistry& registry = built_plugins();
  const ExperimentConfig cfg = load_experiment(kQuickstart, {"device=cpu"}, registry);
  EXPECT_TRUE(cfg.execution.torch_device().is_cpu());
  const auto explicit_cpu = quickstart_top1("cpu", dir.file("explicit"));
  const CommandResult r = run_command(std::string(XDQ_BINARY) + " run " + kQuickstart + " --out " + dir.file("default") +
                                      " --quiet --set calibration.count=256 --set test.count=2000"
                                      " --set 'quantization.calibrators=[minmax, mse]' --set 'quantization.bits=[w4a4]'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream in(dir.file("default/results.json"));
  const nlohmann::json results = nlohmann::json::parse(in);
  ASSERT_EQ(results.at("runs").size(), explicit_cpu.size());
  for (const auto& run : results.at("runs"))
    EXPECT_EQ(run.at("results")[0].at("quant_top1").get<double>(), explicit_cpu.at(run.at("id"))) << run.at("id");
}

// Malformed devices are refused at load with file and key (here the --set that gave it); CUDA on a
// LibTorch without it too.
TEST(Device, MalformedDevicesAndMissingCudaAreRefusedAtLoad) {
  PluginRegistry& registry = built_plugins();
  const std::string bad = error_of([&] { load_experiment(kQuickstart, {"device=tpu"}, registry); });
  EXPECT_NE(bad.find("quickstart.yaml --set device: expected cpu, cuda or cuda:N, got 'tpu'"), std::string::npos) << bad;
  if (at::hasCUDA()) GTEST_SKIP() << "this LibTorch has CUDA: a cuda device is accepted here";
  const std::string cuda = error_of([&] { load_experiment(kQuickstart, {"device=cuda"}, registry); });
  EXPECT_NE(cuda.find("device: the LibTorch this xdq is built with"), std::string::npos) << cuda;
  EXPECT_NE(cuda.find("has no CUDA"), std::string::npos) << cuda;
}

#define XDQ_SKIP_WITHOUT_CUDA() \
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA in this LibTorch (" << TORCH_VERSION << "): run tools/gpu-check.sh on a GPU machine"

// FP32 logits of the four zoo models, CPU against GPU: within 1e-4 relative (float32 sums in another
// order, TF32 off).
TEST(Device, CudaFp32LogitsMatchTheCpu) {
  XDQ_SKIP_WITHOUT_CUDA();
  at::globalContext().setAllowTF32CuDNN(false);
  at::globalContext().setAllowTF32CuBLAS(false);
  const at::Tensor images = load_fashion_mnist(fashion_mnist_dir(), Split::Test).subset(256, 0).images;
  for (const char* name : {"resnet20_fmnist", "mobilenet_v2_fmnist", "shufflenet_v2_fmnist", "vgg_fmnist"}) {
    const ImportedModel m = import_torchscript(std::string(XDQ_SOURCE_DIR) + "/models/" + name + "/model.pt");
    Graph gpu = m.graph;
    gpu.to(c10::Device("cuda"));
    const at::Tensor x = m.preprocess.apply(images);
    const at::Tensor cpu_logits = Executor(m.graph).forward(x);
    const at::Tensor gpu_logits = Executor(gpu).forward(x).cpu();
    EXPECT_LE(max_relative_error(gpu_logits, cpu_logits), 1e-4) << name;
  }
}

// Calibration ranges from statistics collected on the GPU against the CPU's: within 1e-4 relative.
TEST(Device, CudaCalibrationRangesMatchTheCpu) {
  XDQ_SKIP_WITHOUT_CUDA();
  QuantizedResnet20 cpu(512, Split::Train, 0, "minmax");
  ImportedModel m = import_torchscript(std::string(XDQ_SOURCE_DIR) + "/models/resnet20_fmnist/model.pt");
  Graph folded = m.graph;
  fold_batch_norm(folded);
  folded.to(c10::Device("cuda"));
  PtqSettings s;
  s.w_bits = s.a_bits = 4;
  s.scheme = Scheme::load("academic", config_dir() + "/presets");
  QuantizedModel gpu(folded, s);
  calibrate_from_statistics(gpu, built_plugins().load<Calibrator>("minmax", Options()),
                            gpu.collect_statistics(cpu.images, 256, 2048));
  ASSERT_EQ(gpu.activations().size(), cpu.quantized->activations().size());
  for (std::size_t i = 0; i < gpu.activations().size(); ++i) {
    const Range a = gpu.activations()[i].range, b = cpu.quantized->activations()[i].range;
    const double scale = std::max(std::abs(b.min), std::abs(b.max));
    EXPECT_LE(std::abs(a.min - b.min), 1e-4 * scale) << gpu.activations()[i].name;
    EXPECT_LE(std::abs(a.max - b.max), 1e-4 * scale) << gpu.activations()[i].name;
  }
}

// The quickstart at W4A4 on the GPU gives the CPU's top-1 within 0.1 point; BRECQ at W2A4 within 0.5.
TEST(Device, CudaQuickstartTop1MatchesTheCpu) {
  XDQ_SKIP_WITHOUT_CUDA();
  TempDir dir;
  const auto cpu = quickstart_top1("cpu", dir.file("cpu")), gpu = quickstart_top1("cuda", dir.file("gpu"));
  for (const auto& [id, top1] : cpu) EXPECT_NEAR(gpu.at(id), top1, 0.001) << id;
  const auto cpu_brecq = quickstart_top1("cpu", dir.file("cpu_brecq"), true);
  const auto gpu_brecq = quickstart_top1("cuda", dir.file("gpu_brecq"), true);
  for (const auto& [id, top1] : cpu_brecq) EXPECT_NEAR(gpu_brecq.at(id), top1, 0.005) << id;
}

}  // namespace
}  // namespace xdq::test
