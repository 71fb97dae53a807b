#include "xdq/plugin/quantize.h"

#include <memory>
#include <vector>

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

void calibrate_activations(QuantizedModel& model, const Loaded<Calibrator>& calibrator, const at::Tensor& images,
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

void calibrate(QuantizedModel& model, const Loaded<Calibrator>& calibrator, const at::Tensor& images,
               std::int64_t batch_size, const Range& input_range,
               const std::function<std::shared_ptr<const CalibrationStatistics>()>& statistics) {
  const Calibrator::Input input = calibrator.call("input", [](const Calibrator& c) { return c.input(); });
  if (input == Calibrator::Input::Statistics)
    calibrate_from_statistics(model, calibrator, *statistics());
  else if (input == Calibrator::Input::Activations)
    calibrate_activations(model, calibrator, images, batch_size);
  else
    calibrate_from_graph(model, calibrator, input_range);
}

void round_weights(QuantizedModel& model, const Loaded<WeightOptimizer>& optimizer, RoundingContext context) {
  context = model.rounding_context(std::move(context));
  optimizer.call("optimize", [&](const WeightOptimizer& o) { o.optimize(context); });
  model.check_rounded(source_of(optimizer.record()));
}

void apply_pass(QuantizedModel& model, const Loaded<GraphPass>& pass, PassContext context) {
  context.layers = &model.layers();
  context.activations = &model.activations();
  pass.call("run", [&](const GraphPass& p) { p.run(model.graph_for_rewrite(), context); });
}

}  // namespace xdq
