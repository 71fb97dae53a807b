#pragma once
// TorchScript -> Graph. The module is frozen without optimizations (torch::jit::freeze_module keeps
// aten::batch_norm, which data-free synthesis needs), inlined, stripped of in-place mutation and
// constant-propagated; then each node maps to an IR node named by its PyTorch module path.
#include <string>
#include <vector>

#include "xdq/ir/preprocess.h"
#include "xdq/ir/graph.h"

namespace xdq {

struct ImportedModel {
  Graph graph;
  std::string path;
  // From the module's input_mean / input_std attributes when present (models trained by xdq have them).
  bool has_preprocess = false;
  Preprocess preprocess;
  // From the module's input_size attribute ([height, width]) when present (tools/trace_torchvision.py).
  std::vector<std::int64_t> input_size;
};

// Errors name the file: not a TorchScript archive, no forward method, or an unsupported operator
// (with its kind, module path and source location).
ImportedModel import_torchscript(const std::string& path);

// The TorchScript operators that map to generic IR nodes (conv, linear and batch_norm are layers).
const std::vector<std::string>& supported_generic_ops();

}  // namespace xdq
