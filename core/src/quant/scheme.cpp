#include "xdq/quant/scheme.h"

#include <cstdlib>
#include <filesystem>

#include <fnmatch.h>

#include "xdq/config/node.h"
#include "xdq/error.h"

namespace xdq {

Scheme Scheme::from_config(const std::string& name, const ConfigNode& node) {
  node.check_keys({"weights", "activations"});
  Scheme s;
  s.name = name;
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
  return from_config(is_path ? std::filesystem::path(path).stem().string() : name_or_path, ConfigNode::load_file(path));
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

bool override_matches(const LayerOverride& o, const Graph& graph, int node) {
  const auto layers = graph.layer_nodes();
  for (const auto& pattern : o.layers) {
    if (pattern == "first" && !layers.empty() && layers.front() == node) return true;
    if (pattern == "last" && !layers.empty() && layers.back() == node) return true;
    if (fnmatch(pattern.c_str(), graph.nodes[node].name.c_str(), 0) == 0) return true;
  }
  return false;
}

std::string config_dir() {
  if (const char* env = std::getenv("XDQ_CONFIG_DIR"); env && *env) return env;
  return XDQ_SOURCE_CONFIG_DIR;
}

}  // namespace xdq
