#include "xdq/exec/executor.h"

#include "xdq/error.h"

namespace xdq {

Executor::Executor(Graph graph)
    : graph_(std::move(graph)),
      hooks_(graph_.num_values),
      weights_(graph_.nodes.size()),
      last_use_(graph_.num_values, -1) {
  for (std::size_t i = 0; i < graph_.nodes.size(); ++i)
    for (int v : graph_.nodes[i].inputs) last_use_[v] = static_cast<int>(i);
  for (int v : graph_.outputs) last_use_[v] = static_cast<int>(graph_.nodes.size());
  for (const auto& c : graph_.constants) last_use_[c.first] = static_cast<int>(graph_.nodes.size());
}

void Executor::set_value_hook(int value, ValueHook hook) { hooks_.at(value) = std::move(hook); }
void Executor::clear_value_hooks() { std::fill(hooks_.begin(), hooks_.end(), nullptr); }
void Executor::set_weight(int node, at::Tensor weight) { weights_.at(node) = std::move(weight); }
void Executor::clear_weights() { std::fill(weights_.begin(), weights_.end(), at::Tensor()); }

std::vector<c10::IValue> Executor::run(const std::vector<c10::IValue>& inputs) const {
  if (inputs.size() != graph_.inputs.size())
    throw Error("model expects " + std::to_string(graph_.inputs.size()) + " inputs, got " + std::to_string(inputs.size()));
  std::vector<c10::IValue> values(graph_.num_values);
  for (const auto& c : graph_.constants) values[c.first] = c.second;
  auto produce = [&](int v, c10::IValue value) {
    if (hooks_[v] && value.isTensor()) value = hooks_[v](value.toTensor());
    values[v] = std::move(value);
  };
  for (std::size_t i = 0; i < inputs.size(); ++i) produce(graph_.inputs[i], inputs[i]);

  std::vector<c10::IValue> stack;
  for (std::size_t i = 0; i < graph_.nodes.size(); ++i) {
    const Node& node = graph_.nodes[i];
    switch (node.kind) {
      case OpKind::Conv: {
        const at::Tensor& w = weights_[i].defined() ? weights_[i] : node.weight;
        produce(node.outputs[0], at::conv2d(values[node.inputs[0]].toTensor(), w, node.bias, node.conv.stride,
                                            node.conv.padding, node.conv.dilation, node.conv.groups));
        break;
      }
      case OpKind::Linear: {
        const at::Tensor& w = weights_[i].defined() ? weights_[i] : node.weight;
        produce(node.outputs[0], at::linear(values[node.inputs[0]].toTensor(), w, node.bias));
        break;
      }
      case OpKind::BatchNorm:
        produce(node.outputs[0], at::batch_norm(values[node.inputs[0]].toTensor(), node.bn.gamma, node.bn.beta,
                                                node.bn.mean, node.bn.var, false, 0.0, node.bn.eps, true));
        break;
      case OpKind::Generic: {
        stack.clear();
        for (int v : node.inputs) stack.push_back(values[v]);
        node.run(stack);
        if (stack.size() != node.outputs.size())
          throw Error("operator " + node.op + " at '" + node.name + "' left " + std::to_string(stack.size()) +
                      " values for " + std::to_string(node.outputs.size()) + " outputs");
        for (std::size_t k = 0; k < node.outputs.size(); ++k) produce(node.outputs[k], std::move(stack[k]));
        break;
      }
    }
    for (int v : node.inputs)
      if (last_use_[v] == static_cast<int>(i)) values[v] = c10::IValue();
  }
  std::vector<c10::IValue> outputs;
  for (int v : graph_.outputs) outputs.push_back(values[v]);
  return outputs;
}

at::Tensor Executor::forward(const at::Tensor& input) const {
  auto outputs = run({input});
  if (outputs.empty()) throw Error("model has no outputs");
  if (outputs[0].isTensor()) return outputs[0].toTensor();
  if (outputs[0].isTuple()) return outputs[0].toTupleRef().elements().at(0).toTensor();
  throw Error("model's first output is not a tensor");
}

}  // namespace xdq
