// _xdq: the C++ side of the Python package `xdq` (python/xdq/__init__.py is the API). Tensors cross as
// torch.Tensor without copies (python3-torch and libtorch-dev are one LibTorch build); xdq errors become
// xdq.XdqError with the same file:line:key messages as the command line.
#include <torch/csrc/utils/pybind.h>

#include <iostream>
#include <sstream>

#include <ATen/core/grad_mode.h>

#include "xdq/config/node.h"
#include "xdq/data/sources.h"
#include "xdq/error.h"
#include "xdq/exec/convolution.h"
#include "xdq/commands/commands.h"
#include "xdq/experiment/load.h"
#include "xdq/experiment/plan.h"
#include "xdq/files.h"
#include "xdq/ir/describe.h"
#include "xdq/ir/import.h"
#include "xdq/plugin/quantize.h"
#include "xdq/report/experiment_report.h"
#include "xdq/report/plugin_catalog.h"
#include "xdq/report/results_tables.h"
#include "xdq/statistics.h"
#include "xdq/version.h"

namespace py = pybind11;

namespace {

xdq::PluginRegistry& registry() {
  static bool scanned = false;
  auto& r = xdq::global_registry();
  if (!scanned) {
    r.scan(xdq::plugin_search_dirs({}));
    scanned = true;
  }
  return r;
}

// A config given as a file path, or as YAML text (a Python dict dumped by the wrapper).
xdq::ExperimentConfig load(const std::string& path_or_text, bool is_text, const std::string& base_dir,
                           const std::vector<std::string>& sets) {
  if (is_text) return xdq::load_experiment_text(path_or_text, "<config dict>", base_dir, sets, registry());
  return xdq::load_experiment(path_or_text, sets, registry());
}

// A plugin from a list item given as JSON text (a name, or {"name": ..., options...}), checked as an
// experiment's list item is.
xdq::PluginChoice plugin_choice(xdq::PluginKind kind, const std::string& json, const std::string& what) {
  return xdq::parse_plugin(xdq::ConfigNode::parse(json, what), kind, registry());
}

// `run` on images from Python (`what`: their name in messages): they are checked before any work (float
// [N, C, H, W], finite), and LibTorch's errors on what the model cannot read (channels, size) become an
// xdq.XdqError naming the model and the shape.
template <class F>
auto on_images(const std::string& model, const at::Tensor& images, const std::string& what, F&& run) {
  std::ostringstream shape;
  shape << images.sizes();
  if (images.dim() != 4 || !images.is_floating_point())
    throw xdq::Error(what + ": expected float images [N, C, H, W], got a " + std::string(images.dtype().name()) +
                     " tensor of shape " + shape.str());
  if (!at::isfinite(images).all().item<bool>()) throw xdq::Error(what + ": the images hold NaN or infinite values");
  try {
    return run();
  } catch (const c10::Error& e) {
    const std::string message = e.what_without_backtrace();
    throw xdq::Error(model + ": cannot run on images of shape " + shape.str() + " (" + message.substr(0, message.find('\n')) + ")");
  }
}

// A model quantized from Python: the same steps as a run's (BN folding, calibration, weight ranges,
// rounding), on images the caller gives.
class QuantizedModelHandle {
 public:
  QuantizedModelHandle(xdq::QuantizedModel model, xdq::Preprocess pre, std::string path)
      : model_(std::move(model)), pre_(std::move(pre)), path_(std::move(path)) {}

  at::Tensor forward(const at::Tensor& images) const {
    at::NoGradGuard no_grad;
    return on_images(path_, images, "images", [&] { return model_.executor().forward(pre_.apply(images)); });
  }
  py::list activations() const {
    py::list out;
    for (const auto& a : model_.activations())
      out.append(py::dict(py::arg("name") = a.name, py::arg("bits") = a.spec.bits, py::arg("min") = a.range.min,
                          py::arg("max") = a.range.max, py::arg("scale") = a.qparams.scale,
                          py::arg("zero_point") = a.qparams.zero_point));
    return out;
  }
  py::list layers() const {
    py::list out;
    for (const auto& l : model_.layers())
      out.append(py::dict(py::arg("name") = model_.graph().nodes[l.node].name, py::arg("bits") = l.spec.bits,
                          py::arg("scale") = l.qparams.scale, py::arg("zero_point") = l.qparams.zero_point,
                          py::arg("weight") = l.quantized_weight));
    return out;
  }

 private:
  xdq::QuantizedModel model_;
  xdq::Preprocess pre_;
  std::string path_;  // the model file, for messages
};

// Model.quantize's arguments; calibrator, rounding, passes and overrides as JSON text (what an
// experiment's quantization section would hold).
struct QuantizeArgs {
  std::string bits, calibrator, rounding, passes, overrides, preset, weight_range, device;
  std::int64_t batch_size, histogram_bins;
  std::uint64_t seed;
};

class ModelHandle {
 public:
  // In the memory layout `xdq run` chooses (memory_format: auto) and with the convolutions of the
  // experiment key `convolution`, which its quantized copies keep.
  ModelHandle(const std::string& path, const std::string& convolution) : model_(xdq::import_torchscript(path)) {
    model_.graph.channels_last = xdq::channels_last_pays(model_.graph.device());
    model_.graph.convolution = xdq::conv_algorithm(convolution);
  }

  QuantizedModelHandle quantize(const at::Tensor& calibration, const QuantizeArgs& a) const {
    return on_images(model_.path, calibration, "calibration", [&] { return quantized(calibration, a); });
  }
  at::Tensor forward(const at::Tensor& images) const {
    at::NoGradGuard no_grad;
    return on_images(model_.path, images, "images",
                     [&] { return xdq::Executor(model_.graph).forward(model_.preprocess.apply(images)); });
  }

 private:
  QuantizedModelHandle quantized(const at::Tensor& calibration, const QuantizeArgs& a) const {
    const xdq::BitSetting bits = xdq::parse_bit_setting(xdq::ConfigNode::parse(a.bits, "bits"));
    xdq::RecipeSettings recipe;
    recipe.ptq.w_bits = bits.w_bits;
    recipe.ptq.a_bits = bits.a_bits;
    recipe.ptq.scheme = xdq::Scheme::load(a.preset, xdq::config_dir() + "/presets");
    recipe.ptq.weight_range = a.weight_range;
    xdq::parse_layer_overrides(xdq::ConfigNode::parse(a.overrides, "overrides"), ".", recipe.ptq.overrides);
    for (const xdq::LayerOverride& o : recipe.ptq.overrides) xdq::check_override_patterns(o, model_.graph);
    recipe.calibrator = plugin_choice(xdq::PluginKind::Calibrator, a.calibrator, "calibrator");
    recipe.rounding = plugin_choice(xdq::PluginKind::WeightOptimizer, a.rounding, "rounding");
    const xdq::ConfigNode passes = xdq::ConfigNode::parse(a.passes, "passes");
    if (passes.size() > 0) recipe.passes = xdq::parse_plugins(passes, xdq::PluginKind::GraphPass, registry());
    recipe.batch_size = a.batch_size;
    recipe.histogram_bins = static_cast<int>(a.histogram_bins);
    recipe.device = xdq::parse_device(a.device, xdq::ConfigNode::parse(a.device, "device"));
    recipe.seed = a.seed;
    const at::Tensor images = model_.preprocess.apply(calibration);
    const auto [lo, hi] = model_.preprocess.value_range(images.size(1));
    const xdq::QuantizeRecipe quantize(registry(), std::move(recipe), std::cerr);
    return QuantizedModelHandle(quantize.quantize(model_.graph, {images, xdq::Range{lo, hi}, nullptr}), model_.preprocess,
                                model_.path);
  }

  xdq::ImportedModel model_;
};

}  // namespace

PYBIND11_MODULE(_xdq, m) {
  m.doc() = "xdq's C++ core; use the `xdq` package";
  m.attr("__version__") = XDQ_VERSION;
  py::register_exception<xdq::Error>(m, "XdqError", PyExc_RuntimeError);

  m.def("run", [](const std::string& config, bool is_text, const std::string& base_dir, const std::string& out,
                  const std::vector<std::string>& sets) {
    const xdq::ExperimentConfig cfg = load(config, is_text, base_dir, sets);
    if (!out.empty()) xdq::check_output_folder(out);
    py::gil_scoped_release release;
    const xdq::ExperimentRun run = out.empty() ? xdq::run_experiment(cfg, registry(), std::cerr)
                                               : xdq::run_experiment_to(cfg, registry(), out, std::cerr);
    return xdq::results_json(run.results);
  });
  m.def("plan", [](const std::string& config, bool is_text, const std::string& base_dir, const std::vector<std::string>& sets) {
    const xdq::ExperimentConfig cfg = load(config, is_text, base_dir, sets);
    return xdq::describe_plan(cfg, xdq::plan_experiment(cfg));
  });
  m.def("plugins", [] { return xdq::plugin_catalog_json(registry(), {}); });
  m.def("paired_test", [](const std::string& correct_a, const std::string& correct_b, std::int64_t n) {
    return xdq::mcnemar_exact_p(xdq::unpack_bits(correct_a, n), xdq::unpack_bits(correct_b, n));
  });
  m.def("inspect", [](const std::string& path) { return xdq::describe_model(xdq::import_torchscript(path)); });
  m.def("load_dataset", [](const std::string& name, std::int64_t count, std::uint64_t seed) {
    std::string dataset;
    xdq::Split split = xdq::Split::Train;
    if (!xdq::parse_dataset_split(name, dataset, split))
      throw xdq::Error("dataset '" + name + "': expected <dataset>.train or <dataset>.test, e.g. fashion_mnist.test");
    xdq::Dataset d = xdq::load_dataset(dataset, split, xdq::DataLocations{}, xdq::InputShape{}, count, seed);
    if (count > 0) d = d.subset(count, seed);
    return py::make_tuple(d.images, d.labels);
  });

  py::class_<QuantizedModelHandle>(m, "QuantizedModel")
      .def("__call__", &QuantizedModelHandle::forward)
      .def("activations", &QuantizedModelHandle::activations)
      .def("layers", &QuantizedModelHandle::layers);
  py::class_<ModelHandle>(m, "Model")
      .def(py::init<const std::string&, const std::string&>())
      .def("__call__", &ModelHandle::forward)
      .def("quantize",
           [](const ModelHandle& model, const at::Tensor& calibration, const std::string& bits, const std::string& calibrator,
              const std::string& rounding, const std::string& passes, const std::string& overrides, const std::string& preset,
              const std::string& weight_range, const std::string& device, std::int64_t batch_size,
              std::int64_t histogram_bins, std::uint64_t seed) {
             return model.quantize(calibration, {bits, calibrator, rounding, passes, overrides, preset, weight_range, device,
                                                 batch_size, histogram_bins, seed});
           });
}
