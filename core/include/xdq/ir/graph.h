#pragma once
// xdq's graph IR: a flat, topologically ordered list of nodes over numbered values.
// Layers that quantization works on (conv, linear, batch_norm) are first-class nodes that own their
// parameters, so passes can rewrite them; every other op keeps the TorchScript operator it was imported
// from and runs through it, so its semantics are PyTorch's own.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/ivalue.h>

namespace xdq {

enum class OpKind { Conv, Linear, BatchNorm, Generic };

// How conv nodes convolve: ATen's convolution (direct), or oneDNN's Winograd F(4x4, 3x3) for the 3x3,
// stride-1 ones it covers (xdq/exec/convolution.h): fewer multiplications, float32 rounding of its own.
enum class ConvAlgorithm { Direct, Winograd };

struct ConvAttrs {
  std::vector<std::int64_t> stride{1, 1}, padding{0, 0}, dilation{1, 1};
  std::int64_t groups = 1;
};

// Statistics of a BatchNorm that was folded into the conv before it; data-free methods still need them.
struct BatchNormStats {
  at::Tensor gamma, beta, mean, var;
  double eps = 1e-5;
};

struct Node {
  OpKind kind = OpKind::Generic;
  std::string op;      // "conv2d", "linear", "batch_norm", or the TorchScript symbol ("aten::relu")
  std::string name;    // PyTorch module path ("layer1.block0.conv1"); ops get "<module>/<op>"
  std::string source;  // source location recorded in the TorchScript file, if any
  std::string schema;  // Generic registered operators: the TorchScript schema (argument names, for export)
  std::vector<int> inputs, outputs;

  // Conv / Linear
  at::Tensor weight, bias;
  ConvAttrs conv;
  // BatchNorm (kind BatchNorm), or the BN folded into this conv (folded_bn.gamma defined)
  BatchNormStats bn;
  BatchNormStats folded_bn;

  // Generic: runs the TorchScript operator on a stack holding the inputs; leaves the outputs on it.
  std::function<void(std::vector<c10::IValue>&)> run;

  bool is_layer() const { return kind == OpKind::Conv || kind == OpKind::Linear; }
  bool is_depthwise() const { return kind == OpKind::Conv && conv.groups > 1 && conv.groups == weight.size(0); }
};

struct Graph {
  std::vector<Node> nodes;
  int num_values = 0;
  std::vector<int> inputs, outputs;
  std::vector<std::pair<int, c10::IValue>> constants;  // values known at import time
  std::vector<std::string> value_names;                // for messages and reports
  // The memory layout every Executor of this graph (and of its copies) runs convolutions in: channels-last
  // (NHWC) when set, else contiguous (NCHW). The weights stay contiguous here; executors convert them.
  bool channels_last = false;
  // The experiment's `convolution`, carried to every copy of the graph like the layout.
  ConvAlgorithm convolution = ConvAlgorithm::Direct;

  int add_value(const std::string& name);
  // Node index producing `value`, or -1 for graph inputs and constants.
  int producer(int value) const;
  // Indices of nodes reading `value`.
  std::vector<int> consumers(int value) const;
  // The node that alone reads `value`, or -1 (no reader, several, or `value` is also a graph output).
  int only_reader(int value) const;
  // The number a constant value holds (an int, a double or a scalar), or nullopt (not a constant, or
  // another kind).
  std::optional<double> constant_number(int value) const;
  // Replaces every read of `from` (nodes and graph outputs) with `to`.
  void replace_uses(int from, int to);
  // Drops nodes whose outputs nobody reads (repeatedly).
  void remove_dead_nodes();

  std::vector<int> layer_nodes() const;  // conv and linear, in order
  std::int64_t parameter_count() const;
  // Every tensor the graph owns (layer parameters, BatchNorm statistics, tensor constants) moved to `device`.
  void to(const c10::Device& device);
  // Where the graph's tensors are: the first layer's weight's device (the CPU for a graph without layers).
  c10::Device device() const;
};

// memory_format: auto's layout for a graph on `device`: channels-last on the CPU, where oneDNN convolves
// it without reordering every input and output (measured on 2 cores, AVX-512 and AVX2 kernels: ResNet-20
// at 28x28 evaluates 1.2-1.3x faster, torchvision ResNet-18 / MobileNetV2 1.2-1.9x at 64-224); contiguous
// on a GPU, where it has not been measured yet.
inline bool channels_last_pays(const c10::Device& device) { return device.is_cpu(); }

// The op without its in-place suffix: "aten::relu_" -> "aten::relu".
std::string strip_inplace(const std::string& op);

}  // namespace xdq
