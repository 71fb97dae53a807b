// Calibration data selection against its floor: each selector choosing 64 and 256 images from a pool of
// 10 000 Fashion-MNIST images, beside one FP32 pass of the same model over the same pool (TorchScript,
// batch 256), measured in the same run; the one-pass selectors' target is <= 2 passes.
// Usage: xdq_bench_selection [MODEL.pt] [--threads N] [--rounds R]
#include <cstdio>
#include <string>
#include <vector>

#include <torch/script.h>

#include "bench_util.h"
#include "xdq/data/fashion_mnist.h"
#include "xdq/ir/import.h"
#include "xdq/parallel.h"
#include "xdq/plugin/registry.h"

using namespace xdq;
using bench::median;
using bench::seconds;

int main(int argc, char** argv) {
  const bench::ModelBenchArgs args = bench::parse_model_bench_args(
      argc, argv, std::string(XDQ_SOURCE_DIR) + "/models/resnet20_fmnist/model.pt", "xdq_bench_selection [MODEL.pt] [--threads N] [--rounds R]");
  const std::string& model_path = args.model_path;
  const int rounds = args.rounds;
  const int threads = apply_thread_count(args.threads);
  auto& registry = global_registry();
  registry.scan(plugin_search_dirs());
  const ImportedModel model = import_torchscript(model_path);
  torch::jit::Module module = torch::jit::load(model_path);
  module.eval();
  const at::Tensor pool = load_fashion_mnist(fashion_mnist_dir(), Split::Train).subset(10000, 0).images;
  const at::Tensor target = load_fashion_mnist(fashion_mnist_dir(), Split::Test).images.slice(0, 0, 64) * 0.3;
  const std::int64_t batch = 256;
  const auto fp32_pass = [&] {
    const at::NoGradGuard no_grad;
    for (std::int64_t b = 0; b < pool.size(0); b += batch)
      module.forward({model.preprocess.apply(pool.slice(0, b, b + batch))});
  };
  const std::vector<std::string> names{"random", "class_balanced", "kcenter", "bn_match", "selectq", "range_coverage", "target_match"};
  const std::vector<std::int64_t> counts{64, 256};
  std::vector<double> floor;
  std::vector<std::vector<double>> times(names.size() * counts.size());
  fp32_pass();  // warm-up
  for (int r = 0; r < rounds; ++r) {
    floor.push_back(seconds(fp32_pass));
    for (std::size_t k = 0; k < names.size(); ++k)
      for (std::size_t c = 0; c < counts.size(); ++c) {
        const auto selector = registry.load<Selector>(names[k], default_options(registry.get(PluginKind::Selector, names[k]).options));
        SelectionContext context;
        context.graph = &model.graph;
        context.preprocess = model.preprocess;
        context.pool = pool;
        context.target = target;
        context.count = counts[c];
        context.seed = static_cast<std::uint64_t>(r);
        context.batch_size = batch;
        times[k * counts.size() + c].push_back(
            seconds([&] { selector.call("select", [&](const Selector& s) { return s.select(context); }); }));
      }
  }
  std::printf("model %s, threads %d, rounds %d (medians); pool 10000 images 28x28\n", model_path.c_str(), threads, rounds);
  std::printf("FP32 TorchScript pass over the pool  %.3f s\n", median(floor));
  for (std::size_t k = 0; k < names.size(); ++k)
    for (std::size_t c = 0; c < counts.size(); ++c) {
      const double t = median(times[k * counts.size() + c]);
      std::printf("%-15s %3lld images  %7.3f s   ratio %.2f FP32 passes   (target <= 2)\n", names[k].c_str(),
                  static_cast<long long>(counts[c]), t, t / median(floor));
    }
  return 0;
}
