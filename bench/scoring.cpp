// What a scorer costs against its floor: each scorer plugin on a 1 024-image calibration set and a 256-image
// target sample (darkened test images), beside one FP32 TorchScript pass of the same model over set and
// target (batch 256), measured in the same run. A scorer's time holds everything it needs: the FP features
// it declares (one pass over set and target), its score(), and, for scorers reading the quantized model
// (W4A4, minmax ranges), that model's logits on the target and the clipped shares (an FP pass over the
// target). Target: at most one FP pass over set and target each (printed: the passes each makes).
// Usage: xdq_bench_scoring [MODEL.pt] [--threads N] [--rounds R]
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include <torch/script.h>

#include "bench_util.h"
#include "xdq/data/fashion_mnist.h"
#include "xdq/experiment/diagnostics.h"
#include "xdq/ir/import.h"
#include "xdq/parallel.h"
#include "xdq/select/selection.h"

using namespace xdq;
using bench::median;
using bench::seconds;

int main(int argc, char** argv) {
  const bench::ModelBenchArgs args = bench::parse_model_bench_args(
      argc, argv, std::string(XDQ_SOURCE_DIR) + "/models/resnet20_fmnist/model.pt", "xdq_bench_scoring [MODEL.pt] [--threads N] [--rounds R]");
  const std::string& model_path = args.model_path;
  const int rounds = args.rounds;
  const int threads = apply_thread_count(args.threads);
  auto& registry = global_registry();
  registry.scan(plugin_search_dirs());
  const ImportedModel model = import_torchscript(model_path);
  torch::jit::Module module = torch::jit::load(model_path);
  module.eval();
  const at::Tensor set = load_fashion_mnist(fashion_mnist_dir(), Split::Train).subset(1024, 0).images;
  const at::Tensor target = load_fashion_mnist(fashion_mnist_dir(), Split::Test).images.slice(0, 0, 256) * 0.3;
  const std::int64_t batch = 256;
  const auto fp32_pass = [&] {
    const at::NoGradGuard no_grad;
    for (const at::Tensor* images : {&set, &target})
      for (std::int64_t b = 0; b < images->size(0); b += batch)
        module.forward({model.preprocess.apply(images->slice(0, b, b + batch))});
  };
  RecipeSettings recipe;
  recipe.ptq.w_bits = recipe.ptq.a_bits = 4;
  recipe.calibrator = registry.default_choice(PluginKind::Calibrator, "minmax");
  recipe.rounding = registry.default_choice(PluginKind::WeightOptimizer, "nearest");
  std::ostringstream quiet;
  Graph folded = model.graph;
  QuantizeRecipe::fold(folded, true);
  const QuantizedModel quantized =
      QuantizeRecipe(registry, recipe, quiet).quantize(folded, {CalibrationImages(model.preprocess.apply(set)), {0, 1}, nullptr});
  std::vector<std::string> names;
  for (const PluginRecord& r : registry.records())
    if (r.kind == PluginKind::Scorer) names.push_back(r.name);
  std::vector<double> floor;
  std::vector<std::vector<double>> times(names.size());
  fp32_pass();  // warm-up
  for (int r = 0; r < rounds; ++r) {
    floor.push_back(seconds(fp32_pass));
    for (std::size_t k = 0; k < names.size(); ++k) {
      const auto scorer = registry.load<Scorer>(names[k], default_options(registry.get(PluginKind::Scorer, names[k]).options));
      times[k].push_back(seconds([&] {
        SelectionContext context;
        context.graph = &model.graph;
        context.preprocess = model.preprocess;
        context.pool = set;
        context.batch_size = batch;
        const FeatureRequest request = scorer.call("features", [](const Scorer& s) { return s.features(); });
        ScoringInputs in;
        in.calibration = set;
        in.target = target;
        if (request.logits || request.penultimate || request.bn_inputs || request.layer_inputs) {  // as the pipeline does
          if (request.calibration_set) in.calibration_features = pool_features(context, request);
          in.target_features = image_features(context, target, request);
        }
        if (scorer.call("reads_quantized_model", [](const Scorer& s) { return s.reads_quantized_model(); })) {
          const at::NoGradGuard no_grad;
          const at::Tensor images = model.preprocess.apply(target);
          in.quantized_target_logits = quantized.executor().forward(images);
          in.target_clipped = clipped_fractions(quantized, images, batch);
        }
        scorer.call("score", [&](const Scorer& s) { return s.score(in); });
      }));
    }
  }
  std::printf("model %s, threads %d, rounds %d (medians); set 1024 + target 256 images 28x28\n", model_path.c_str(), threads, rounds);
  std::printf("FP32 TorchScript pass over set and target  %.3f s\n", median(floor));
  for (std::size_t k = 0; k < names.size(); ++k) {
    const double t = median(times[k]);
    std::printf("%-18s %7.3f s   ratio %.2f of the FP32 TorchScript pass\n", names[k].c_str(), t, t / median(floor));
  }
  return 0;
}
