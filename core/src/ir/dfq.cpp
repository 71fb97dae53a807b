#include "xdq/ir/dfq.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <sstream>


namespace xdq {

std::optional<std::pair<double, double>> clip_bounds(const Graph& graph, const Node& node) {
  const double inf = std::numeric_limits<double>::infinity();
  const std::string op = strip_inplace(node.op);
  if (op == "aten::relu") return std::make_pair(0.0, inf);
  if (op == "aten::relu6") return std::make_pair(0.0, 6.0);
  if (op == "aten::hardtanh") {
    const auto lo = node.inputs.size() > 1 ? graph.constant_number(node.inputs[1]) : std::optional<double>(-1.0);
    const auto hi = node.inputs.size() > 2 ? graph.constant_number(node.inputs[2]) : std::optional<double>(1.0);
    if (lo && hi) return std::make_pair(*lo, *hi);
  }
  return std::nullopt;
}

std::vector<LayerPair> layer_pairs(const Graph& graph) {
  std::vector<LayerPair> pairs;
  for (std::size_t i = 0; i < graph.nodes.size(); ++i) {
    const Node& first = graph.nodes[i];
    if (!first.is_layer()) continue;
    const int out = first.outputs[0];
    int reader = graph.only_reader(out);
    if (reader < 0) continue;
    LayerPair pair;
    pair.first = static_cast<int>(i);
    int value = out;
    if (!graph.nodes[reader].is_layer()) {
      const Node& act = graph.nodes[reader];
      const auto bounds = clip_bounds(graph, act);
      const bool activation = bounds || strip_inplace(act.op) == "aten::leaky_relu";
      if (!activation) continue;
      pair.activation = reader;
      value = act.outputs[0];
      const int next = graph.only_reader(value);
      if (next < 0 || !graph.nodes[next].is_layer()) continue;
      reader = next;
      if (bounds && (bounds->first != 0 || std::isfinite(bounds->second))) {
        std::ostringstream problem;
        problem << act.op << " clips to [" << bounds->first << ", " << bounds->second << "], which is not positively homogeneous";
        pair.problem = problem.str();
      }
    }
    const Node& second = graph.nodes[reader];
    if (second.inputs[0] != value) continue;
    const std::int64_t channels = first.weight.size(0);
    if (first.kind == OpKind::Conv && second.kind == OpKind::Linear) continue;  // spatial flatten in between
    if (second.kind == OpKind::Conv && second.conv.groups != 1 && !second.is_depthwise()) continue;
    if (second.kind == OpKind::Conv && !second.is_depthwise() && second.weight.size(1) != channels) continue;
    if (second.is_depthwise() && second.weight.size(0) != channels) continue;
    if (second.kind == OpKind::Linear && second.weight.size(1) != channels) continue;
    pair.second = reader;
    pairs.push_back(pair);
  }
  return pairs;
}

at::Tensor constant_input_response(const Node& layer, const at::Tensor& weight, const at::Tensor& v) {
  if (layer.is_depthwise()) return weight.sum({1, 2, 3}) * v;
  if (layer.kind == OpKind::Conv) return at::matmul(weight.sum({2, 3}), v);
  return at::matmul(weight, v);
}

ChannelMoments clipped_normal_moments(const at::Tensor& mean, const at::Tensor& std, double lo, double hi) {
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  const at::Tensor t = at::linspace(-10, 10, 4001, opts).view({1, -1});
  at::Tensor w = at::exp(-0.5 * t * t);
  w = w / w.sum();
  const at::Tensor m = mean.to(at::kDouble).view({-1, 1}), s = std.to(at::kDouble).abs().view({-1, 1});
  const at::Tensor y = at::clamp(m + s * t, lo, hi);
  const at::Tensor ey = (y * w).sum(1), ey2 = (y * y * w).sum(1);
  return {ey, at::sqrt(at::clamp_min(ey2 - ey * ey, 0))};
}

std::optional<ChannelMoments> channel_moments(const Graph& graph, int value, std::string* why) {
  auto fail = [&](const std::string& reason) -> std::optional<ChannelMoments> {
    if (why) *why = reason;
    return std::nullopt;
  };
  const int p = graph.producer(value);
  if (p < 0) return fail("value '" + graph.value_names.at(value) + "' is a model input (no BN statistics describe it)");
  const Node& node = graph.nodes[p];
  if (node.is_layer()) {
    if (!node.folded_bn.gamma.defined()) return fail("layer '" + node.name + "' has no folded BatchNorm");
    return ChannelMoments{node.folded_bn.beta.to(at::kDouble), node.folded_bn.gamma.to(at::kDouble).abs()};
  }
  const std::string op = strip_inplace(node.op);
  if (node.inputs.empty()) return fail("node '" + node.name + "' (" + op + ") has no input");
  if (auto bounds = clip_bounds(graph, node)) {
    auto in = channel_moments(graph, node.inputs[0], why);
    if (!in) return in;
    return clipped_normal_moments(in->mean, in->std, bounds->first, bounds->second);
  }
  static const std::set<std::string> keep = {"aten::avg_pool2d", "aten::adaptive_avg_pool2d", "aten::max_pool2d",
                                             "aten::flatten",    "aten::view",                 "aten::reshape",
                                             "aten::dropout",    "aten::contiguous",           "aten::mean"};
  // Taken as channel-preserving (pooling keeps the mean; flatten/view as in classifier heads over [N, C, 1, 1]).
  if (keep.count(op)) return channel_moments(graph, node.inputs[0], why);
  if (op == "aten::add") {
    if (node.inputs.size() > 2) {
      const auto alpha = graph.constant_number(node.inputs[2]);
      if (!alpha || *alpha != 1) return fail("node '" + node.name + "' adds with alpha != 1");
    }
    auto a = channel_moments(graph, node.inputs[0], why);
    if (!a) return a;
    auto b = channel_moments(graph, node.inputs[1], why);
    if (!b) return b;
    return ChannelMoments{a->mean + b->mean, at::sqrt(a->std * a->std + b->std * b->std)};
  }
  if (op == "aten::cat") {
    const int list = node.inputs[0];
    const int maker = graph.producer(list);
    const auto dim = node.inputs.size() > 1 ? graph.constant_number(node.inputs[1]) : std::nullopt;
    if (maker < 0 || graph.nodes[maker].op != "prim::ListConstruct" || !dim || *dim != 1)
      return fail("node '" + node.name + "' concatenates other than a list of tensors along channels");
    std::vector<at::Tensor> means, stds;
    for (int part : graph.nodes[maker].inputs) {
      auto m = channel_moments(graph, part, why);
      if (!m) return m;
      means.push_back(m->mean);
      stds.push_back(m->std);
    }
    return ChannelMoments{at::cat(means), at::cat(stds)};
  }
  return fail("node '" + node.name + "' (" + op + ") has no BN-statistics rule");
}

}  // namespace xdq
