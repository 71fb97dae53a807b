#pragma once
// Helpers shared by the test files: temporary folders, tolerances, running the CLI.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>

#include <ATen/ATen.h>

#include "xdq/data/fashion_mnist.h"
#include "xdq/error.h"
#include "xdq/ir/import.h"
#include "xdq/ir/passes.h"
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

// max|a - b| / max|b|
inline double max_relative_error(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item<double>();
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

  QuantizedResnet20(std::int64_t count, Split split, std::uint64_t seed, const std::string& weight_range)
      : model(import_torchscript(std::string(XDQ_SOURCE_DIR) + "/models/resnet20_fmnist/model.pt")) {
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
    quantized->calibrate_from_statistics(*plugins.create<Calibrator>("minmax", Options()),
                                         plugins.get(PluginKind::Calibrator, "minmax"),
                                         quantized->collect_statistics(images, 256, 2048));
    quantized->set_weight_ranges(weight_range);
  }
};

}  // namespace xdq::test
