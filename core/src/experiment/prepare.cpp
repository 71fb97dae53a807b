#include "prepare.h"

#include <ATen/core/grad_mode.h>

#include <ostream>
#include <utility>

#include "xdq/error.h"
#include "xdq/exec/executor.h"

namespace xdq {

PreparedModel prepare_model(const ModelEntry& entry, const ExecutionSettings& execution, const TestSettings& test,
                            const QuantizationSettings& quantization, DomainCache& domains, std::ostream& progress) {
  PreparedModel p{import_for_experiment(execution, entry.path), {}, {}, {}};
  p.pre = model_preprocess(entry, p.model);
  if (!entry.has_preprocess && !p.model.has_preprocess)
    progress << "xdq: note: " << entry.path << " declares no input normalization; feeding [0, 1] images\n";
  if (!entry.size_declared && p.model.input_size.empty())
    progress << "xdq: note: model '" << entry.name << "' declares no input size (input_size or preprocess.crop); feeding "
             << entry.input.height << "x" << entry.input.width << " images\n";
  p.shape = model_input_shape(entry, p.model);
  for (const LayerOverride& o : quantization.overrides) check_override_patterns(o, p.model.graph);
  if (quantization.scheme.matmul_inputs && token_matmuls(p.model.graph).empty())
    throw Error(entry.path + ": model '" + entry.name + "' has no token matmul (aten::bmm or aten::matmul of two " +
                "activations) for the matmul_inputs quantizers of preset '" + quantization.preset +
                "' (quantization.preset); use a preset without them for this model");
  // One FP32 forward before any work: a model that cannot read this input size (a wrong input_size, a
  // 224x224 model fed 28x28) is named here rather than failing inside a run with a LibTorch trace.
  at::NoGradGuard no_grad;
  std::int64_t classes = 0;
  try {
    classes = Executor(p.model.graph)
                  .forward(p.pre.apply(at::zeros({1, p.shape.channels, p.shape.height, p.shape.width})))
                  .size(1);
  } catch (const std::exception& e) {
    const std::string what = e.what();
    throw Error(entry.path + ": model '" + entry.name + "' cannot run on " + std::to_string(p.shape.channels) + "x" +
                std::to_string(p.shape.height) + "x" + std::to_string(p.shape.width) +
                " inputs (set the model's input_size): " + what.substr(0, what.find('\n')));
  }
  for (const DomainSpec& d : test.domains) {
    TestImages images = domains.test_images(d, p.shape, test.count, execution.seed);
    const std::int64_t max_label = images.labels().max().item<std::int64_t>();
    if (max_label >= classes)
      throw Error(d.line + ": test domain '" + d.name + "' has label " + std::to_string(max_label) + " but model '" +
                  entry.name + "' has " + std::to_string(classes) + " classes");
    p.tests.push_back(std::move(images));
  }
  return p;
}

PtqSettings ptq_settings(const QuantizationSettings& quantization, const BitSetting& bits) {
  PtqSettings settings;
  settings.w_bits = bits.w_bits;
  settings.a_bits = bits.a_bits;
  settings.scheme = quantization.scheme;
  settings.overrides = quantization.overrides;
  settings.weight_range = quantization.weight_range;
  return settings;
}

RecipeSettings recipe_settings(const QuantizationSettings& quantization, const CalibrationSettings& calibration,
                               c10::Device device, PtqSettings ptq, const PluginChoice& calibrator,
                               const PluginChoice& rounding, std::uint64_t seed) {
  RecipeSettings r;
  r.ptq = std::move(ptq);
  r.calibrator = calibrator;
  r.rounding = rounding;
  r.passes = quantization.passes;
  r.fold_bn = quantization.fold_bn;
  r.batch_size = calibration.batch_size;
  r.histogram_bins = calibration.histogram_bins;
  r.device = device;
  r.seed = seed;
  return r;
}

CalibrationData calibration_data(CalibrationImages images, const Preprocess& pre, StatisticsCache* statistics) {
  const auto [lo, hi] = pre.value_range(images.image_shape().at(0));
  return {std::move(images), Range{lo, hi}, statistics};
}

}  // namespace xdq
