#include "xdq/quant/scheme.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <vector>

#include <fnmatch.h>

#include "xdq/config/node.h"
#include "xdq/error.h"
#include "xdq/files.h"

namespace xdq {

namespace {

// A preset key naming the grid of one kind of activation: uniform (the default) or `other`.
Grid grid_key(const ConfigNode& preset, const std::string& key, Grid other, const std::string& other_name) {
  if (!preset.has(key)) return Grid::uniform;
  const std::string grid = preset[key].as_string();
  if (grid != "uniform" && grid != other_name) preset[key].fail("expected uniform or " + other_name);
  return grid == "uniform" ? Grid::uniform : other;
}

}  // namespace

Scheme Scheme::from_config(const std::string& name, const ConfigNode& node, const std::string& base) {
  node.check_keys({"weights", "activations", "placement", "matmul_inputs", "softmax_outputs", "gelu_outputs",
                   "overrides"});
  Scheme s;
  s.name = name;
  if (node.has("placement")) {
    const std::string placement = node["placement"].as_string();
    if (placement == "layer_inputs") s.placement = Placement::LayerInputs;
    else if (placement == "layer_outputs") s.placement = Placement::LayerOutputs;
    else if (placement == "layer_inputs_and_outputs") s.placement = Placement::LayerInputsAndOutputs;
    else node["placement"].fail("expected layer_inputs, layer_outputs or layer_inputs_and_outputs");
  }
  s.matmul_inputs = node.get("matmul_inputs", false);
  if (s.matmul_inputs && s.placement != Placement::LayerInputs)
    node["matmul_inputs"].fail("matmul inputs are quantized with placement layer_inputs");
  s.softmax_outputs = grid_key(node, "softmax_outputs", Grid::log_sqrt2, "log_sqrt2");
  if (s.softmax_outputs != Grid::uniform && !s.matmul_inputs)
    node["softmax_outputs"].fail("softmax outputs are quantized where a matmul reads them: set matmul_inputs: true");
  s.gelu_outputs = grid_key(node, "gelu_outputs", Grid::twin_uniform, "twin_uniform");
  if (node.has("overrides")) parse_layer_overrides(node["overrides"], base, s.overrides);
  const ConfigNode w = node["weights"];
  w.check_keys({"symmetric", "per_channel", "narrow_range", "pow2_scale"});
  s.weights.symmetric = w.get("symmetric", s.weights.symmetric);
  s.weights.per_channel = w.get("per_channel", s.weights.per_channel);
  s.weights.narrow_range = w.get("narrow_range", s.weights.narrow_range);
  s.weights.pow2_scale = w.get("pow2_scale", s.weights.pow2_scale);
  const ConfigNode a = node["activations"];
  a.check_keys({"symmetric", "pow2_scale", "unsigned_after_relu"});
  s.activations.symmetric = a.get("symmetric", s.activations.symmetric);
  s.activations.pow2_scale = a.get("pow2_scale", s.activations.pow2_scale);
  s.unsigned_after_relu = a.get("unsigned_after_relu", s.unsigned_after_relu);
  // Asymmetric activations use the unsigned grid [0, 2^b - 1] (PyTorch's quint8 convention).
  s.activations.unsigned_range = !s.activations.symmetric;
  return s;
}

Scheme Scheme::load(const std::string& name_or_path, const std::string& dir) {
  const bool is_path = name_or_path.size() > 5 && name_or_path.substr(name_or_path.size() - 5) == ".yaml";
  const std::string path = is_path ? name_or_path : (std::filesystem::path(dir) / (name_or_path + ".yaml")).string();
  if (!std::filesystem::exists(path)) {
    std::string known;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir, ec))
      if (e.path().extension() == ".yaml") known += (known.empty() ? "" : ", ") + e.path().stem().string();
    throw Error("unknown quantization preset '" + name_or_path + "' (available: " + known + ")");
  }
  return from_config(is_path ? std::filesystem::path(path).stem().string() : name_or_path, ConfigNode::load_file(path),
                     std::filesystem::path(path).parent_path().string());
}

QuantSpec Scheme::weight_spec(int bits) const {
  QuantSpec s = weights;
  s.bits = bits;
  return s;
}

QuantSpec Scheme::activation_spec(int bits, bool nonnegative) const {
  QuantSpec s = activations;
  s.bits = bits;
  if (s.symmetric) s.unsigned_range = nonnegative && unsigned_after_relu;
  return s;
}

void parse_layer_overrides(const ConfigNode& list, const std::string& base, std::vector<LayerOverride>& out) {
  const auto parse = [&out](const auto& self, const ConfigNode& items, const std::filesystem::path& folder, int depth) -> void {
    if (!items.is_sequence()) items.fail("expected a list of {layers, w_bits, a_bits} or {include: file}");
    for (std::size_t i = 0; i < items.size(); ++i) {
      const ConfigNode o = items[i];
      if (o.has("include")) {
        o.check_keys({"include"});
        if (depth > 8) o["include"].fail("includes nested too deeply");
        const std::filesystem::path file = std::filesystem::absolute(folder / o["include"].as_string()).lexically_normal();
        const ConfigNode included = ConfigNode::load_file(file.string());
        included.check_keys({"overrides"});
        self(self, included["overrides"], file.parent_path(), depth + 1);
        continue;
      }
      o.check_keys({"layers", "w_bits", "a_bits"});
      LayerOverride lo;
      lo.layers = o["layers"].as_string_list();
      lo.where = o["layers"].where();
      if (o.has("w_bits")) lo.w_bits = static_cast<int>(o["w_bits"].as_int_in(2, 8));
      if (o.has("a_bits")) lo.a_bits = static_cast<int>(o["a_bits"].as_int_in(2, 16));
      out.push_back(lo);
    }
  };
  parse(parse, list, base, 0);
}

bool override_matches(const LayerOverride& o, const Graph& graph, int node) {
  const auto layers = graph.layer_nodes();
  for (const auto& pattern : o.layers) {
    if (pattern == "first" && !layers.empty() && layers.front() == node) return true;
    if (pattern == "last" && !layers.empty() && layers.back() == node) return true;
    if (pattern == "penultimate" && layers.size() >= 2 && layers[layers.size() - 2] == node) return true;
    if (fnmatch(pattern.c_str(), graph.nodes[node].name.c_str(), 0) == 0) return true;
  }
  return false;
}


void check_override_patterns(const LayerOverride& o, const Graph& graph) {
  const auto layers = graph.layer_nodes();
  for (const auto& pattern : o.layers) {
    if (pattern == "first" || pattern == "last" || pattern == "penultimate") continue;
    LayerOverride one{{pattern}, {}, {}, {}};
    if (std::any_of(layers.begin(), layers.end(), [&](int n) { return override_matches(one, graph, n); })) continue;
    std::vector<std::string> names;
    for (int n : layers) names.push_back(graph.nodes[n].name);
    throw ConfigError(o.where + ": no conv/linear layer named '" + pattern + "' in this model; closest: " + closest_names(pattern, names));
  }
}

std::string config_dir() {
  if (const char* env = std::getenv("XDQ_CONFIG_DIR"); env && *env) return env;
  const std::filesystem::path installed = std::filesystem::path(core_library_dir()).parent_path() / "share" / "xdq" / "configs";
  if (std::filesystem::is_directory(installed)) return installed.string();
  return XDQ_SOURCE_CONFIG_DIR;
}

std::vector<int> token_matmuls(const Graph& graph) {
  std::vector<bool> constant(static_cast<std::size_t>(graph.num_values), false);
  for (const auto& c : graph.constants) constant[static_cast<std::size_t>(c.first)] = true;
  std::vector<int> out;
  for (std::size_t i = 0; i < graph.nodes.size(); ++i) {
    const Node& n = graph.nodes[i];
    if ((n.op == "aten::bmm" || n.op == "aten::matmul") && n.inputs.size() == 2 &&
        !constant[static_cast<std::size_t>(n.inputs[0])] && !constant[static_cast<std::size_t>(n.inputs[1])])
      out.push_back(static_cast<int>(i));
  }
  return out;
}

}  // namespace xdq
