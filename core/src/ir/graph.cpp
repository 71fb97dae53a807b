#include "xdq/ir/graph.h"

#include <algorithm>
#include <set>

namespace xdq {

int Graph::add_value(const std::string& name) {
  value_names.push_back(name);
  return num_values++;
}

int Graph::producer(int value) const {
  for (std::size_t i = 0; i < nodes.size(); ++i)
    for (int out : nodes[i].outputs)
      if (out == value) return static_cast<int>(i);
  return -1;
}

std::vector<int> Graph::consumers(int value) const {
  std::vector<int> out;
  for (std::size_t i = 0; i < nodes.size(); ++i)
    if (std::find(nodes[i].inputs.begin(), nodes[i].inputs.end(), value) != nodes[i].inputs.end())
      out.push_back(static_cast<int>(i));
  return out;
}

int Graph::only_reader(int value) const {
  const std::vector<int> readers = consumers(value);
  const bool is_output = std::count(outputs.begin(), outputs.end(), value) > 0;
  return readers.size() == 1 && !is_output ? readers[0] : -1;
}

std::optional<double> Graph::constant_number(int value) const {
  for (const auto& [v, c] : constants)
    if (v == value) {
      if (c.isDouble()) return c.toDouble();
      if (c.isInt()) return static_cast<double>(c.toInt());
      if (c.isScalar()) return c.toScalar().toDouble();
    }
  return std::nullopt;
}

void Graph::replace_uses(int from, int to) {
  for (auto& node : nodes) std::replace(node.inputs.begin(), node.inputs.end(), from, to);
  std::replace(outputs.begin(), outputs.end(), from, to);
}

namespace {
// aten::fill_, aten::relu_, ...: an operator name ending in one underscore (not a dunder such as __getitem__).
bool writes_in_place(const Node& node) {
  const std::string name = node.op.substr(node.op.find("::") == std::string::npos ? 0 : node.op.find("::") + 2);
  return name.size() > 1 && name.back() == '_' && name.compare(0, 2, "__") != 0;
}
}  // namespace

void Graph::remove_dead_nodes() {
  for (bool changed = true; changed;) {
    changed = false;
    std::set<int> used(outputs.begin(), outputs.end());
    for (const auto& node : nodes) used.insert(node.inputs.begin(), node.inputs.end());
    for (std::size_t i = nodes.size(); i-- > 0;) {
      const auto& outs = nodes[i].outputs;
      // Nodes without outputs are the model's own checks (scripted `if ...: raise`): kept. So are writes in
      // place (aten::fill_ on a slice, as Swin builds its attention mask): TorchScript's mutation removal
      // leaves only those into views of other values, whose effect is on that value, not their output.
      if (!outs.empty() && !writes_in_place(nodes[i]) &&
          std::none_of(outs.begin(), outs.end(), [&](int v) { return used.count(v); })) {
        nodes.erase(nodes.begin() + static_cast<std::ptrdiff_t>(i));
        changed = true;
      }
    }
  }
  std::set<int> used(outputs.begin(), outputs.end());
  for (const auto& node : nodes) used.insert(node.inputs.begin(), node.inputs.end());
  constants.erase(std::remove_if(constants.begin(), constants.end(), [&](const auto& c) { return !used.count(c.first); }),
                  constants.end());
}

std::vector<int> Graph::layer_nodes() const {
  std::vector<int> out;
  for (std::size_t i = 0; i < nodes.size(); ++i)
    if (nodes[i].is_layer()) out.push_back(static_cast<int>(i));
  return out;
}

std::int64_t Graph::parameter_count() const {
  std::int64_t n = 0;
  for (const auto& node : nodes) {
    for (const at::Tensor* t : {&node.weight, &node.bias, &node.bn.gamma, &node.bn.beta})
      if (t->defined()) n += t->numel();
  }
  return n;
}

namespace {
void move(at::Tensor& t, const c10::Device& device) {
  if (t.defined()) t = t.to(device);
}
void move(BatchNormStats& bn, const c10::Device& device) {
  for (at::Tensor* t : {&bn.gamma, &bn.beta, &bn.mean, &bn.var}) move(*t, device);
}
}  // namespace

void Graph::to(const c10::Device& device) {
  for (Node& n : nodes) {
    move(n.weight, device);
    move(n.bias, device);
    move(n.bn, device);
    move(n.folded_bn, device);
  }
  for (auto& [value, constant] : constants)
    if (constant.isTensor()) constant = constant.toTensor().to(device);
}

c10::Device Graph::device() const {
  for (const Node& n : nodes)
    if (n.is_layer() && n.weight.defined()) return n.weight.device();
  return c10::Device(c10::kCPU);
}

std::string strip_inplace(const std::string& op) {
  return (!op.empty() && op.back() == '_') ? op.substr(0, op.size() - 1) : op;
}

}  // namespace xdq
