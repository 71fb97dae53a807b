#include "xdq/ir/passes.h"

#include <algorithm>
#include <set>

#include "xdq/ir/dfq.h"

namespace xdq {

namespace {

bool tensor_value(const Graph& graph, int value) {
  // Constants feeding a merge are scalars/lists; only computed values are tensors here.
  for (const auto& c : graph.constants)
    if (c.first == value) return c.second.isTensor();
  return true;
}

// The values of a trace's shape arithmetic: prim::NumToTensor of a size, and what operators compute from
// such values and constants alone (0-dimensional tensors and ints, never an activation).
std::vector<bool> shape_values(const Graph& graph) {
  std::vector<bool> constant(static_cast<std::size_t>(graph.num_values), false), shape(constant.size(), false);
  for (const auto& c : graph.constants) constant[static_cast<std::size_t>(c.first)] = true;
  for (const Node& n : graph.nodes) {
    bool computed = false, from_shapes = n.op == "prim::NumToTensor";
    if (n.kind == OpKind::Generic && !from_shapes) {
      from_shapes = true;
      for (int v : n.inputs)
        if (!constant[static_cast<std::size_t>(v)]) computed = true, from_shapes = from_shapes && shape[static_cast<std::size_t>(v)];
      from_shapes = from_shapes && computed;
    }
    if (from_shapes)
      for (int v : n.outputs) shape[static_cast<std::size_t>(v)] = true;
  }
  return shape;
}

// Values reachable backwards from `value` (inclusive), as a set of value ids.
std::set<int> ancestors(const Graph& graph, const std::vector<int>& producer, int value) {
  std::set<int> seen;
  std::vector<int> todo{value};
  while (!todo.empty()) {
    const int v = todo.back();
    todo.pop_back();
    if (!seen.insert(v).second) continue;
    const int p = producer[v];
    if (p >= 0)
      for (int in : graph.nodes[p].inputs) todo.push_back(in);
  }
  return seen;
}

std::string common_prefix(const std::vector<std::string>& names) {
  if (names.empty()) return "";
  std::string prefix = names[0];
  for (const auto& n : names) {
    std::size_t k = 0;
    while (k < prefix.size() && k < n.size() && prefix[k] == n[k]) ++k;
    prefix.resize(k);
  }
  const auto dot = prefix.rfind('.');
  // Cut back to a whole module name unless the prefix is exactly one of the names' parents.
  bool whole = std::all_of(names.begin(), names.end(), [&](const std::string& n) {
    return n.size() > prefix.size() && n[prefix.size()] == '.';
  });
  if (whole) return prefix;
  return dot == std::string::npos ? "" : prefix.substr(0, dot);
}

}  // namespace

bool output_is_nonnegative(const Graph& graph, const Node& node) {
  const std::string op = strip_inplace(node.op);
  if (op == "aten::sigmoid" || op == "aten::hardsigmoid") return true;
  const auto bounds = clip_bounds(graph, node);
  return bounds && bounds->first >= 0;
}

bool is_activation_op(const Node& node) {
  static const std::set<std::string> ops = {"aten::relu", "aten::relu6", "aten::hardtanh", "aten::hardswish",
                                            "aten::silu", "aten::sigmoid", "aten::hardsigmoid", "aten::gelu",
                                            "aten::leaky_relu", "aten::tanh"};
  return ops.count(strip_inplace(node.op)) > 0;
}

std::vector<std::pair<int, int>> conv_bn_pairs(const Graph& graph) {
  std::vector<std::pair<int, int>> pairs;
  for (std::size_t i = 0; i < graph.nodes.size(); ++i) {
    const Node& bn = graph.nodes[i];
    if (bn.kind != OpKind::BatchNorm) continue;
    const int conv = graph.producer(bn.inputs[0]);
    if (conv < 0 || graph.nodes[conv].kind != OpKind::Conv) continue;
    if (graph.consumers(bn.inputs[0]).size() != 1) continue;
    if (std::count(graph.outputs.begin(), graph.outputs.end(), bn.inputs[0])) continue;
    pairs.emplace_back(conv, static_cast<int>(i));
  }
  return pairs;
}

int fold_batch_norm(Graph& graph) {
  const auto pairs = conv_bn_pairs(graph);
  std::vector<int> folded_bns;
  for (const auto& [conv_index, bn_index] : pairs) {
    Node& conv = graph.nodes[conv_index];
    const Node& bn = graph.nodes[bn_index];
    const at::Tensor inv_std = at::rsqrt(bn.bn.var + bn.bn.eps);
    const at::Tensor scale = bn.bn.gamma * inv_std;
    const at::Tensor bias = conv.bias.defined() ? conv.bias : at::zeros_like(bn.bn.mean);
    conv.weight = conv.weight * scale.view({-1, 1, 1, 1});
    conv.bias = (bias - bn.bn.mean) * scale + bn.bn.beta;
    conv.folded_bn = bn.bn;
    graph.replace_uses(bn.outputs[0], conv.outputs[0]);
    folded_bns.push_back(bn_index);
  }
  std::sort(folded_bns.rbegin(), folded_bns.rend());
  for (int i : folded_bns) graph.nodes.erase(graph.nodes.begin() + i);
  graph.remove_dead_nodes();
  return static_cast<int>(pairs.size());
}

std::vector<int> merge_nodes(const Graph& graph) {
  const std::vector<bool> shape = shape_values(graph);
  std::vector<int> out;
  for (std::size_t i = 0; i < graph.nodes.size(); ++i) {
    const Node& n = graph.nodes[i];
    const std::string op = strip_inplace(n.op);
    if (op == "aten::cat") {
      out.push_back(static_cast<int>(i));
    } else if ((op == "aten::add" || op == "aten::sub" || op == "aten::mul") && n.inputs.size() >= 2 &&
               tensor_value(graph, n.inputs[0]) && tensor_value(graph, n.inputs[1]) &&
               graph.producer(n.inputs[0]) >= 0 && graph.producer(n.inputs[1]) >= 0 &&
               !shape[static_cast<std::size_t>(n.inputs[0])] && !shape[static_cast<std::size_t>(n.inputs[1])]) {
      out.push_back(static_cast<int>(i));
    }
  }
  return out;
}

std::vector<ResidualBlock> find_residual_blocks(const Graph& graph, bool include_concat) {
  std::vector<int> producer(graph.num_values, -1);
  for (std::size_t i = 0; i < graph.nodes.size(); ++i)
    for (int v : graph.nodes[i].outputs) producer[v] = static_cast<int>(i);
  std::vector<int> position(graph.num_values, -1);  // topological position of each value's producer
  for (std::size_t i = 0; i < graph.nodes.size(); ++i)
    for (int v : graph.nodes[i].outputs) position[v] = static_cast<int>(i);

  std::vector<ResidualBlock> blocks;
  for (int merge : merge_nodes(graph)) {
    const Node& add = graph.nodes[merge];
    std::vector<int> branches;  // the merged tensors
    const std::string op = strip_inplace(add.op);
    if (op == "aten::add") {
      branches = {add.inputs[0], add.inputs[1]};
    } else if (op == "aten::cat" && include_concat) {
      const int list = producer[add.inputs[0]];
      if (list < 0 || graph.nodes[list].op != "prim::ListConstruct") continue;
      branches = graph.nodes[list].inputs;
    }
    if (branches.size() < 2) continue;
    std::vector<std::set<int>> paths;
    for (int b : branches) paths.push_back(ancestors(graph, producer, b));
    int fork = -1;  // the latest value every branch descends from
    for (int v : paths[0])
      if (std::all_of(paths.begin() + 1, paths.end(), [&](const std::set<int>& p) { return p.count(v) > 0; }) &&
          (fork < 0 || position[v] > position[fork]))
        fork = v;
    if (fork < 0) continue;
    const auto before_fork = ancestors(graph, producer, fork);
    ResidualBlock block;
    block.input_value = fork;
    block.output_value = add.outputs[0];
    std::set<int> inside;
    for (const auto& path : paths)
      for (int v : path)
        if (!before_fork.count(v) && producer[v] >= 0) inside.insert(producer[v]);
    inside.insert(merge);
    const auto readers = graph.consumers(add.outputs[0]);
    if (readers.size() == 1 && is_activation_op(graph.nodes[readers[0]])) {
      inside.insert(readers[0]);
      block.output_value = graph.nodes[readers[0]].outputs[0];
    }
    block.nodes.assign(inside.begin(), inside.end());
    std::vector<std::string> names;
    for (int n : block.nodes)
      if (graph.nodes[n].is_layer()) {
        block.layers.push_back(n);
        names.push_back(graph.nodes[n].name);
      }
    block.name = common_prefix(names);
    if (block.name.empty()) block.name = graph.nodes[merge].name;
    blocks.push_back(std::move(block));
  }
  return blocks;
}

}  // namespace xdq
