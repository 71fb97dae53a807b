#include "xdq/plugin/quantize.h"

#include <memory>
#include <ostream>
#include <utility>
#include <vector>

#include "xdq/ir/passes.h"

namespace xdq {

namespace {
std::string source_of(const PluginRecord& plugin) { return "plugin '" + plugin.name + "' (" + plugin.path + ")"; }
}  // namespace

void calibrate_from_statistics(QuantizedModel& model, const Loaded<Calibrator>& calibrator,
                               const CalibrationStatistics& statistics) {
  for (std::size_t i = 0; i < model.activations().size(); ++i) {
    const ActivationQuantizer& act = model.activations()[i];
    const auto found = statistics.find(act.value);
    if (found == statistics.end()) throw Error("no calibration statistics for " + act.name);
    const Range range = calibrator.call("range_from_statistics", [&](const Calibrator& c) {
      return c.range_from_statistics(found->second, act.spec);
    });
    model.set_activation_range(i, range, source_of(calibrator.record()));
  }
}

void calibrate_activations(QuantizedModel& model, const Loaded<Calibrator>& calibrator, const CalibrationImages& images,
                           std::int64_t batch_size) {
  std::vector<std::unique_ptr<RangeObserver>> observers;
  for (const auto& act : model.activations())
    observers.push_back(calibrator.call("make_observer", [&](const Calibrator& c) { return c.make_observer(act.spec); }));
  model.observe_activations(images, batch_size, [&](std::size_t i, const at::Tensor& x) {
    calibrator.call("observe", [&](const Calibrator&) { observers[i]->observe(x); });
  });
  for (std::size_t i = 0; i < observers.size(); ++i)
    model.set_activation_range(i, calibrator.call("range", [&](const Calibrator&) { return observers[i]->range(); }),
                               source_of(calibrator.record()));
}

void calibrate_from_graph(QuantizedModel& model, const Loaded<Calibrator>& calibrator, const Range& input_range) {
  for (std::size_t i = 0; i < model.activations().size(); ++i) {
    const int value = model.activations()[i].value;
    const Range range = calibrator.call("range_from_graph", [&](const Calibrator& c) {
      return c.range_from_graph(model.graph(), value, input_range);
    });
    model.set_activation_range(i, range, source_of(calibrator.record()));
  }
}

void apply_pass(QuantizedModel& model, const Loaded<GraphPass>& pass, PassContext context) {
  context.layers = &model.layers();
  context.activations = &model.activations();
  pass.call("run", [&](const GraphPass& p) { p.run(model.graph_for_rewrite(), context); });
}

QuantizeRecipe::QuantizeRecipe(const PluginRegistry& registry, RecipeSettings settings, std::ostream& log)
    : settings_(std::move(settings)),
      calibrator_(registry.load<Calibrator>(settings_.calibrator.name, settings_.calibrator.options)),
      rounding_(registry.load<WeightOptimizer>(settings_.rounding.name, settings_.rounding.options)),
      log_(log) {
  for (const PluginChoice& choice : settings_.passes) {
    Pass pass{registry.load<GraphPass>(choice.name, choice.options), false};
    pass.after_rounding = pass.plugin.call("stage", [](const GraphPass& p) { return p.stage(); }) == PassStage::AfterRounding;
    passes_.push_back(std::move(pass));
  }
}

bool QuantizeRecipe::adapts_to_data() const {
  for (const Pass& pass : passes_)
    if (!pass.after_rounding) return true;
  return false;
}

PassContext QuantizeRecipe::pass_context(const CalibrationData& data) const {
  PassContext context;
  context.calibration = data.images;
  context.device = settings_.device;
  context.seed = settings_.seed;
  context.log = &log_;
  context.a_bits = settings_.ptq.a_bits;
  return context;
}

QuantizedModel QuantizeRecipe::quantize(const Graph& fp32, const CalibrationData& data, const RoundingOutputs& outputs) const {
  Graph graph = fp32;
  graph.to(settings_.device);
  return rounded(calibrated(adapted(std::move(graph), data), data), data, outputs);
}

int QuantizeRecipe::fold(Graph& graph, bool fold_bn) { return fold_bn ? fold_batch_norm(graph) : 0; }

Graph QuantizeRecipe::adapted(Graph graph, const CalibrationData& data) const {
  const PassContext context = pass_context(data);
  for (const Pass& pass : passes_)
    if (!pass.after_rounding) pass.plugin.call("run", [&](const GraphPass& p) { p.run(graph, context); });
  fold(graph, settings_.fold_bn);
  return graph;
}

QuantizedModel QuantizeRecipe::calibrated(const Graph& folded, const CalibrationData& data) const {
  QuantizedModel model(folded, settings_.ptq);
  const Calibrator::Input input = calibrator_.call("input", [](const Calibrator& c) { return c.input(); });
  if (!calibrator_.call("handles_any_grid", [](const Calibrator& c) { return c.handles_any_grid(); }))
    for (const ActivationQuantizer& act : model.activations())
      if (act.spec.grid != Grid::uniform)
        throw Error(source_of(calibrator_.record()) + " calibrates uniform grids only, and preset '" + settings_.ptq.scheme.name +
                    "' puts a " + act.spec.describe() + " quantizer on " + act.name +
                    " (use one that handles any grid, e.g. quantile_search or mse)");
  if (input == Calibrator::Input::Statistics) {
    if (data.statistics)
      calibrate_from_statistics(model, calibrator_,
                                *data.statistics->get(model, data.images, settings_.batch_size, settings_.histogram_bins, log_));
    else
      calibrate_from_statistics(model, calibrator_,
                                model.collect_statistics(data.images, settings_.batch_size, settings_.histogram_bins));
  } else if (input == Calibrator::Input::Activations) {
    calibrate_activations(model, calibrator_, data.images, settings_.batch_size);
  } else {
    calibrate_from_graph(model, calibrator_, data.input_range);
  }
  model.set_weight_ranges(settings_.ptq.weight_range);
  return model;
}

QuantizedModel QuantizeRecipe::rounded(QuantizedModel model, const CalibrationData& data, const RoundingOutputs& outputs) const {
  RoundingContext context;
  context.calibration = data.images;
  context.device = settings_.device;
  context.seed = settings_.seed;
  context.progress = &log_;
  context.files = outputs.files;
  context.run_name = outputs.run_name;
  context.timings = outputs.timings;
  context = model.rounding_context(std::move(context));
  rounding_.call("optimize", [&](const WeightOptimizer& o) { o.optimize(context); });
  model.check_rounded(source_of(rounding_.record()));
  const PassContext after = pass_context(data);
  for (const Pass& pass : passes_)
    if (pass.after_rounding) apply_pass(model, pass.plugin, after);
  return model;
}

}  // namespace xdq
