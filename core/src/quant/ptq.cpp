#include "xdq/quant/ptq.h"

#include <algorithm>

#include <ATen/core/grad_mode.h>

#include "xdq/error.h"
#include "xdq/ir/passes.h"

namespace xdq {

QuantizedModel::QuantizedModel(Graph folded, const PtqSettings& settings) : graph_(std::move(folded)) {
  for (int node : graph_.layer_nodes()) {
    int w_bits = settings.w_bits, a_bits = settings.a_bits;
    for (const auto& o : settings.overrides)
      if (override_matches(o, graph_, node)) {
        if (o.w_bits) w_bits = *o.w_bits;
        if (o.a_bits) a_bits = *o.a_bits;
      }
    QuantizedLayer layer;
    layer.node = node;
    layer.spec = settings.scheme.weight_spec(w_bits);
    layers_.push_back(layer);

    const int value = graph_.nodes[node].inputs[0];
    auto existing = std::find_if(activations_.begin(), activations_.end(),
                                 [&](const ActivationQuantizer& a) { return a.value == value; });
    const int producer = graph_.producer(value);
    const bool nonnegative = producer >= 0 && output_is_nonnegative(graph_, graph_.nodes[producer]);
    const QuantSpec spec = settings.scheme.activation_spec(a_bits, nonnegative);
    if (existing != activations_.end()) {
      // Shared input (a block input read by conv1 and the shortcut): the widest request wins.
      if (spec.bits > existing->spec.bits) existing->spec = spec;
      continue;
    }
    ActivationQuantizer act;
    act.value = value;
    act.name = graph_.nodes[node].name + ":input";
    act.spec = spec;
    activations_.push_back(act);
  }
}

void QuantizedModel::set_activation_range(std::size_t i, const Range& range, const std::string& source) {
  ActivationQuantizer& act = activations_.at(i);
  if (!(range.min <= range.max)) throw Error(source + " returned an empty range for " + act.name);
  act.range = range;
  act.qparams = qparams_from_range(act.spec, act.range);
}

void QuantizedModel::observe_activations(const at::Tensor& images, std::int64_t batch_size,
                                         const std::function<void(std::size_t, const at::Tensor&)>& observe) const {
  Executor exec(graph_);
  for (std::size_t i = 0; i < activations_.size(); ++i)
    exec.set_value_hook(activations_[i].value, [i, &observe](const at::Tensor& x) {
      observe(i, x);
      return x;
    });
  at::NoGradGuard no_grad;
  for (std::int64_t b = 0; b < images.size(0); b += batch_size)
    exec.forward(images.slice(0, b, std::min(images.size(0), b + batch_size)));
}

CalibrationStatistics QuantizedModel::collect_statistics(const at::Tensor& images, std::int64_t batch_size,
                                                         int bins) const {
  std::vector<ActivationStatistics> collected(activations_.size(), ActivationStatistics(bins));
  observe_activations(images, batch_size, [&](std::size_t i, const at::Tensor& x) { collected[i].add(x); });
  CalibrationStatistics statistics;
  for (std::size_t i = 0; i < activations_.size(); ++i) statistics.emplace(activations_[i].value, std::move(collected[i]));
  return statistics;
}

void QuantizedModel::set_weight_ranges(const std::string& method) {
  for (auto& layer : layers_) layer.qparams = weight_qparams(graph_.nodes[layer.node].weight, layer.spec, method);
}

RoundingContext QuantizedModel::rounding_context(RoundingContext base) {
  base.graph = &graph_;
  base.layers = &layers_;
  base.activations = &activations_;
  return base;
}

void QuantizedModel::check_rounded(const std::string& source) const {
  for (const auto& layer : layers_) {
    const at::Tensor& w = graph_.nodes[layer.node].weight;
    if (!layer.quantized_weight.defined() || !layer.quantized_weight.sizes().equals(w.sizes()))
      throw Error(source + " left no quantized weight of the right shape for " + graph_.nodes[layer.node].name);
  }
}

void QuantizedModel::round_to_nearest() {
  for (auto& layer : layers_) layer.quantized_weight = fake_quantize(graph_.nodes[layer.node].weight, layer.qparams);
}

Executor QuantizedModel::executor() const {
  Executor exec(graph_);
  for (const auto& layer : layers_) exec.set_weight(layer.node, layer.quantized_weight);
  for (const auto& act : activations_) {
    const QParams q = act.qparams;
    exec.set_value_hook(act.value, [q](const at::Tensor& x) { return fake_quantize(x, q); });
  }
  return exec;
}

}  // namespace xdq
