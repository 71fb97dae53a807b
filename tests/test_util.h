#pragma once
// Helpers shared by the test files: temporary folders, tolerances, running the CLI.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "xdq/data/fashion_mnist.h"
#include "xdq/error.h"
#include "xdq/ir/import.h"
#include "xdq/ir/passes.h"
#include "xdq/plugin/quantize.h"
#include "xdq/plugin/registry.h"
#include "xdq/quant/ptq.h"

namespace xdq::test {

// A fresh folder under the system temp dir, removed when the object dies.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() / ("xdq_test_" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// max|a - b| / max|b|
inline double max_relative_error(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item<double>();
}

// Float32 error bounds for comparing two evaluations of one network that sum in different orders
// (another batch size, thread count or CPU: oneDNN picks other kernels). A dot product of n float32
// terms differs between two orders by at most about sqrt(n) * eps relative (random-walk rounding);
// through `depth` layers those relative errors add. ResNet-20: depth 20, largest fan-in 576 (3x3x64).
constexpr double kFloatEps = 1.1920929e-7;
inline double forward_relative_error(int depth, int fan_in) { return depth * std::sqrt(double(fan_in)) * kFloatEps; }

// Tolerance (dB) of an SQNR = 10 log10(|f|^2 / |q - f|^2) measured twice, each output within relative
// error `gamma` of the other's: |q - f| moves by at most 2 gamma |f|, so the SQNR by at most
// (20 / ln 10) * 2 gamma |f| / |q - f| = 17.4 gamma 10^(SQNR / 20).
inline double sqnr_tolerance_db(double sqnr_db, double gamma) {
  return 20.0 / std::log(10.0) * 2.0 * gamma * std::pow(10.0, sqnr_db / 20.0);
}

// Rows of `logits` whose top-1 could change under a relative perturbation `gamma` of the logits: the
// margin between the two largest is within 2 gamma max|logit|. Two evaluations may disagree on these.
inline std::int64_t ambiguous_top1(const at::Tensor& logits, double gamma) {
  const at::Tensor top2 = std::get<0>(logits.topk(2, 1));
  const double bound = 2 * gamma * logits.abs().max().item<double>();
  return (top2.select(1, 0) - top2.select(1, 1)).le(bound).sum().item<std::int64_t>();
}

// --set overrides pointing experiments/imagenet_folder.yaml at the generated fixture (make_imagenet_folder:
// torchvision models with random weights, a folder holding a few of the 1 000 classes).
inline std::vector<std::string> imagenet_fixture_sets() {
  const std::string d = XDQ_IMAGENET_DIR;
  return {"models.0.path=" + d + "/resnet18.pt", "models.1.path=" + d + "/mobilenet_v2.pt",
          "domains.imagenet.dataset=folder:" + d + "/resnet18", "domains.imagenet.classes=" + d + "/synsets.txt",
          "domains.imagenet.missing_classes=allow", "domains.imagenet_night.missing_classes=allow"};
}

// The message of the xdq::Error that f throws ("" when it throws none).
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

struct CommandResult {
  int exit_code = 0;
  std::string output;  // stdout and stderr together
};

inline CommandResult run_command(const std::string& command) {
  CommandResult r;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return {-1, "popen failed"};
  char buffer[4096];
  while (std::fgets(buffer, sizeof buffer, pipe)) r.output += buffer;
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// The quickstart's W4A4 runs on 256 calibration and 2 000 test images with `calibrators` (a YAML list)
// and the extra `sets` ("--set k=v ..."), written to `out`: quant_top1 by run id. Throws with the
// command's output when it fails.
inline std::map<std::string, double> quickstart_w4a4_top1(const std::string& out, const std::string& calibrators,
                                                          const std::string& sets) {
  const CommandResult r = run_command(std::string(XDQ_BINARY) + " run " + XDQ_SOURCE_DIR + "/experiments/quickstart.yaml --out " +
                                      out + " --quiet " + sets + " --set calibration.count=256 --set test.count=2000" +
                                      " --set 'quantization.calibrators=" + calibrators + "' --set 'quantization.bits=[w4a4]'");
  if (r.exit_code != 0) throw std::runtime_error("quickstart failed:\n" + r.output);
  std::ifstream in(out + "/results.json");
  const nlohmann::json results = nlohmann::json::parse(in);
  std::map<std::string, double> top1;
  for (const auto& run : results.at("runs"))
    top1[run.at("id").get<std::string>()] = run.at("results")[0].at("quant_top1").get<double>();
  return top1;
}

// The in-tree plugins, scanned once from the build's plugin folder; a library that fails to load
// fails every test that asks.
inline PluginRegistry& built_plugins() {
  static PluginRegistry* registry = [] {
    auto* r = new PluginRegistry();
    const auto failures = r->scan({XDQ_BUILD_PLUGIN_DIR});
    if (!failures.empty()) throw std::runtime_error("plugin failed to load: " + failures.front());
    return r;
  }();
  return *registry;
}

// The shipped ResNet-20, BN-folded and quantized at W4A4 (academic preset): activation ranges from
// min-max over `count` Fashion-MNIST images of `split` (subset seed `seed`), weight ranges from
// `weight_range`; weights not yet rounded.
struct QuantizedResnet20 {
  ImportedModel model;
  at::Tensor images, labels;
  std::unique_ptr<QuantizedModel> quantized;

  // channels_last: every engine runs the model in channels-last memory (memory_format).
  QuantizedResnet20(std::int64_t count, Split split, std::uint64_t seed, const std::string& weight_range,
                    bool channels_last = false)
      : model(import_torchscript(std::string(XDQ_SOURCE_DIR) + "/models/resnet20_fmnist/model.pt")) {
    model.graph.channels_last = channels_last;
    Graph folded = model.graph;
    fold_batch_norm(folded);
    PtqSettings s;
    s.w_bits = s.a_bits = 4;
    s.scheme = Scheme::load("academic", config_dir() + "/presets");
    quantized = std::make_unique<QuantizedModel>(folded, s);
    const Dataset data = load_fashion_mnist(fashion_mnist_dir(), split).subset(count, seed);
    images = model.preprocess.apply(data.images);
    labels = data.labels;
    PluginRegistry& plugins = built_plugins();
    calibrate_from_statistics(*quantized, plugins.load<Calibrator>("minmax", Options()),
                              quantized->collect_statistics(images, 256, 2048));
    quantized->set_weight_ranges(weight_range);
  }
};

}  // namespace xdq::test
