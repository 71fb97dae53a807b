#pragma once
// Which values get which quantizer: a backend preset (configs/presets/*.yaml) gives the kind of grid for
// weights and activations; the run gives the bits; overrides give some layers other bits
// (e.g. first and last layer at 8 bit).
#include <optional>
#include <string>
#include <vector>

#include "xdq/ir/graph.h"
#include "xdq/quant/spec.h"

namespace xdq {

class ConfigNode;

struct Scheme {
  std::string name = "academic";
  QuantSpec weights{8, false, true, false, false, false};
  QuantSpec activations{8, false, false, false, true, false};
  bool unsigned_after_relu = true;  // symmetric activations after ReLU use the unsigned grid

  // Reads a preset file's map (weights, activations).
  static Scheme from_config(const std::string& name, const ConfigNode& node);
  // Named preset from `dir` (<dir>/<name>.yaml), or a path to a .yaml file.
  static Scheme load(const std::string& name_or_path, const std::string& dir);

  QuantSpec weight_spec(int bits) const;
  QuantSpec activation_spec(int bits, bool nonnegative) const;
};

// `layers`: module paths or globs ("layer1.*"), or the words first / last (the first and last conv/linear).
struct LayerOverride {
  std::vector<std::string> layers;
  std::optional<int> w_bits, a_bits;  // a_bits: the activation read by the layer
  std::string where;                  // file:line key of `layers`, for errors
};

bool override_matches(const LayerOverride& o, const Graph& graph, int node);
// Throws an Error (at o.where) for a pattern that matches no conv/linear layer of `graph`, listing the
// layer names closest to it.
void check_override_patterns(const LayerOverride& o, const Graph& graph);

// Folder of the shipped configs: $XDQ_CONFIG_DIR, else the source tree's configs/ (compiled in).
std::string config_dir();

}  // namespace xdq
