#include "xdq/quant/ptq.h"

#include <algorithm>
#include <map>
#include <string>

#include <ATen/core/grad_mode.h>

#include "xdq/error.h"
#include "xdq/ir/passes.h"
#include "xdq/parallel.h"
#include "xdq/progress.h"

namespace xdq {

namespace {

// The value `value` becomes after the element-wise activations that alone read it (conv -> ReLU).
int after_activations(const Graph& g, int value) {
  for (;;) {
    if (std::count(g.outputs.begin(), g.outputs.end(), value) > 0) return value;
    const auto readers = g.consumers(value);
    if (readers.size() != 1 || !is_activation_op(g.nodes[readers[0]])) return value;
    value = g.nodes[readers[0]].outputs[0];
  }
}

// The node that computed `value`, looking through what passes values on unchanged in evaluation (a
// transformer MLP's dropout between GELU and its second linear).
int computed_by(const Graph& g, int value) {
  int node = g.producer(value);
  while (node >= 0) {
    const std::string op = strip_inplace(g.nodes[node].op);
    if (op != "aten::dropout" && op != "aten::feature_dropout" && op != "aten::contiguous" && op != "aten::clone")
      return node;
    const int before = g.producer(g.nodes[node].inputs[0]);
    if (before < 0) return node;
    node = before;
  }
  return node;
}

bool is_add(const Node& n) { return strip_inplace(n.op) == "aten::add"; }

}  // namespace

QuantizedModel::QuantizedModel(Graph folded, const PtqSettings& settings) : graph_(std::move(folded)) {
  const bool inputs = settings.scheme.placement != Placement::LayerOutputs;
  const bool outputs = settings.scheme.placement != Placement::LayerInputs;
  const bool branch_ends = settings.scheme.placement == Placement::LayerInputsAndOutputs;
  for (int node : graph_.layer_nodes()) {
    int w_bits = settings.w_bits, a_bits = settings.a_bits;
    for (const auto* list : {&settings.scheme.overrides, &settings.overrides})
      for (const auto& o : *list)
        if (override_matches(o, graph_, node)) {
          if (o.w_bits) w_bits = *o.w_bits;
          if (o.a_bits) a_bits = *o.a_bits;
        }
    QuantizedLayer layer;
    layer.node = node;
    layer.spec = settings.scheme.weight_spec(w_bits);
    layers_.push_back(layer);
    const Node& n = graph_.nodes[node];
    if (inputs) add_activation(n.inputs[0], n.name + ":input", a_bits, settings.scheme);
    if (!outputs) continue;
    const int value = after_activations(graph_, n.outputs[0]);
    const auto readers = graph_.consumers(value);
    const bool branch_end = !readers.empty() && std::all_of(readers.begin(), readers.end(), [&](int r) {
      return is_add(graph_.nodes[r]);
    });
    if (!branch_end || branch_ends) add_activation(value, n.name + ":output", a_bits, settings.scheme);
  }
  if (settings.scheme.matmul_inputs) {
    // Named by the matmul's module and its place among that module's matmuls (q·kᵀ is #0, attention·v #1).
    std::map<std::string, int> seen;
    for (int node : token_matmuls(graph_)) {
      const Node& n = graph_.nodes[node];
      const std::string name = n.name + "#" + std::to_string(seen[n.name]++);
      for (int k = 0; k < 2; ++k) add_activation(n.inputs[k], name + ":input" + std::to_string(k), settings.a_bits, settings.scheme);
    }
  }
  if (!outputs) return;
  for (int merge : merge_nodes(graph_))
    if (is_add(graph_.nodes[merge]))
      add_activation(after_activations(graph_, graph_.nodes[merge].outputs[0]), graph_.nodes[merge].name + ":output",
                     settings.a_bits, settings.scheme);
  std::stable_sort(activations_.begin(), activations_.end(), [&](const auto& a, const auto& b) {
    return graph_.producer(a.value) < graph_.producer(b.value);  // forward order, as the reference code meets them
  });
}

void QuantizedModel::add_activation(int value, const std::string& name, int bits, const Scheme& scheme) {
  if (std::count(graph_.outputs.begin(), graph_.outputs.end(), value) > 0) return;  // the model output: never
  const int producer = graph_.producer(value);
  const bool nonnegative = producer >= 0 && output_is_nonnegative(graph_, graph_.nodes[producer]);
  QuantSpec spec = scheme.activation_spec(bits, nonnegative);
  const std::string source = producer >= 0 ? strip_inplace(graph_.nodes[computed_by(graph_, value)].op) : "";
  if (source == "aten::softmax") spec.grid = scheme.softmax_outputs;
  if (source == "aten::gelu") spec.grid = scheme.gelu_outputs;
  if (spec.grid != Grid::uniform) spec.symmetric = spec.per_channel = spec.pow2_scale = false;
  auto existing = std::find_if(activations_.begin(), activations_.end(),
                               [&](const ActivationQuantizer& a) { return a.value == value; });
  if (existing != activations_.end()) {
    // Shared input (a block input read by conv1 and the shortcut): the widest request wins.
    if (spec.bits > existing->spec.bits) existing->spec = spec;
    return;
  }
  ActivationQuantizer act;
  act.value = value;
  act.name = name;
  act.spec = spec;
  activations_.push_back(act);
}

void QuantizedModel::set_activation_range(std::size_t i, const Range& range, const std::string& source) {
  ActivationQuantizer& act = activations_.at(i);
  if (!(range.min <= range.max)) throw Error(source + " returned an empty range for " + act.name);
  act.range = range;
  act.qparams = qparams_from_range(act.spec, act.range);
}

void QuantizedModel::observe_activations(const CalibrationImages& images, std::int64_t batch_size,
                                         const std::function<void(std::size_t, const at::Tensor&)>& observe,
                                         std::ostream* progress) const {
  Executor exec(graph_);
  for (std::size_t i = 0; i < activations_.size(); ++i)
    exec.set_value_hook(activations_[i].value, [i, &observe](const at::Tensor& x) {
      observe(i, x);
      return x;
    });
  at::NoGradGuard no_grad;
  ProgressBar bar(progress, "activation statistics", images.size());
  images.for_each_batch(batch_size, [&](const at::Tensor& x, std::int64_t first) {
    exec.forward(x);
    const std::int64_t done = first + x.size(0);
    bar.update(done, bar.rate(done, "img/s"));
  });
  bar.finish_if_long(bar.rate(images.size(), "img/s"));
  release_freed_memory();
}

CalibrationStatistics QuantizedModel::collect_statistics(const CalibrationImages& images, std::int64_t batch_size, int bins,
                                                         std::ostream* progress) const {
  std::vector<ActivationStatistics> collected(activations_.size(), ActivationStatistics(bins));
  observe_activations(images, batch_size, [&](std::size_t i, const at::Tensor& x) { collected[i].add(x); }, progress);
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
    set_fake_quantizer(exec, act.value, act.qparams);
  }
  return exec;
}

}  // namespace xdq
