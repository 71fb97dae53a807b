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

// `layers`: module paths or globs ("layer1.*"), or the words first / last / penultimate (conv/linear
// layers in graph order).
struct LayerOverride {
  std::vector<std::string> layers;
  std::optional<int> w_bits, a_bits;  // a_bits: the activation quantizer of the layer (see Placement)
  std::string where;                  // file:line key of `layers`, for errors
};

// Where activation quantizers sit.
//   LayerInputs:  every value a conv/linear reads, the model input included; an override's a_bits is the
//                 bits of the layer's input (the academic setting).
//   LayerOutputs: what the BRECQ / QDrop / AdaRound reference code quantizes: each conv/linear output after
//                 its activation function, unless the output only feeds a residual add (a branch end) or
//                 is the model output; each residual add's output after its activation function; never
//                 the model input. An override's a_bits is the bits of the layer's output quantizer.
//   LayerInputsAndOutputs: what an integer runtime computes (ONNX Runtime fuses a conv into QLinearConv
//                 only between a dequantized input and a quantized output, an add into QLinearAdd likewise):
//                 every conv/linear input as LayerInputs, every conv/linear output after its activation
//                 function (branch ends included) unless it is the model output, and each residual add's
//                 output after its activation function. An override's a_bits is the bits of both.
enum class Placement { LayerInputs, LayerOutputs, LayerInputsAndOutputs };

struct Scheme {
  std::string name = "academic";
  QuantSpec weights{8, false, true, false, false, false};
  QuantSpec activations{8, false, false, false, true, false};
  bool unsigned_after_relu = true;  // symmetric activations after ReLU use the unsigned grid
  Placement placement = Placement::LayerInputs;
  // Also both operands of every token matmul (aten::bmm or aten::matmul reading two activations: QK^T and
  // attention x V in a transformer), at the run's activation bits, as RepQ-ViT and PTQ4ViT place them.
  bool matmul_inputs = false;
  // The grid of softmax outputs (the attention matrix a matmul reads): Grid::log_sqrt2 as RepQ-ViT quantizes
  // them; preset key softmax_outputs: uniform | log_sqrt2.
  Grid softmax_outputs = Grid::uniform;
  // The grid of GELU outputs (the input of a transformer MLP's second linear): Grid::twin_uniform as PTQ4ViT
  // quantizes them; preset key gelu_outputs: uniform | twin_uniform.
  Grid gelu_outputs = Grid::uniform;
  std::vector<LayerOverride> overrides;  // the preset's own (a paper's first/last rule), before the run's

  // Reads a preset file's map (weights, activations, placement, overrides); `base`: the file's folder.
  static Scheme from_config(const std::string& name, const ConfigNode& node, const std::string& base = "");
  // Named preset from `dir` (<dir>/<name>.yaml), or a path to a .yaml file.
  static Scheme load(const std::string& name_or_path, const std::string& dir);

  QuantSpec weight_spec(int bits) const;
  QuantSpec activation_spec(int bits, bool nonnegative) const;
};

// An `overrides` list: items {layers, w_bits, a_bits}, or {include: FILE} naming a YAML file whose own
// `overrides` list is read in place (what `xdq analyze` writes); relative paths start at `base`.
void parse_layer_overrides(const ConfigNode& list, const std::string& base, std::vector<LayerOverride>& out);

bool override_matches(const LayerOverride& o, const Graph& graph, int node);
// Throws an Error (at o.where) for a pattern that matches no conv/linear layer of `graph`, listing the
// layer names closest to it.
void check_override_patterns(const LayerOverride& o, const Graph& graph);

// The token matmuls of `graph`: aten::bmm and aten::matmul nodes whose two operands are activations (not
// weights held as constants), in graph order.
std::vector<int> token_matmuls(const Graph& graph);

// Folder of the shipped configs: $XDQ_CONFIG_DIR, else an installed tree's share/xdq/configs, else the
// source tree's configs/ (compiled in).
std::string config_dir();

}  // namespace xdq
