#include "xdq/ir/import.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <unordered_map>

#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/freeze_module.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/passes/remove_mutation.h>
#include <torch/csrc/jit/serialization/import.h>

#include "xdq/error.h"
#include "zip_crc.h"

namespace xdq {

namespace {

namespace jit = torch::jit;

// Module path from the inlined call stack: layer1 / block0 / conv1 -> "layer1.block0.conv1".
std::string module_path(const jit::Node* node) {
  std::string path;
  if (auto stack = node->callstack()) {
    for (const auto& entry : (*stack)->vec()) {
      const auto& info = std::get<2>(entry);
      if (!info) continue;
      const std::string name = info->instance_name();
      if (name.empty() || name == "self") continue;
      path += (path.empty() ? "" : ".") + name;
    }
  }
  return path;
}

std::string source_location(const jit::Node* node) {
  const auto& range = node->sourceRange();
  if (auto flc = range.file_line_col()) {
    return std::get<0>(*flc) + ":" + std::to_string(std::get<1>(*flc)) + ":" + std::to_string(std::get<2>(*flc));
  }
  return "";
}

c10::IValue constant_input(const std::string& file, const jit::Node* node, std::size_t index, const char* what) {
  auto v = jit::toIValue(node->inputs().at(index));
  if (!v)
    throw Error(file + ": " + node->kind().toQualString() + " at '" + module_path(node) + "': " + what +
                " must be a constant");
  return *v;
}

at::Tensor optional_tensor(const c10::IValue& v) { return v.isNone() ? at::Tensor() : v.toTensor(); }

// The list/tuple prim ops are interpreter instructions, not registered operators: built here.
std::function<void(std::vector<c10::IValue>&)> prim_operation(const jit::Node* n) {
  const auto kind = n->kind();
  if (kind == c10::prim::ListConstruct) {
    const c10::TypePtr elem = n->output()->type()->expectRef<c10::ListType>().getElementType();
    return [elem](std::vector<c10::IValue>& stack) {
      c10::impl::GenericList list(elem);
      list.reserve(stack.size());
      for (auto& v : stack) list.push_back(std::move(v));
      stack.clear();
      stack.emplace_back(std::move(list));
    };
  }
  if (kind == c10::prim::ListUnpack) {
    return [](std::vector<c10::IValue>& stack) {
      const auto list = stack.at(0).toListRef();
      std::vector<c10::IValue> items(list.begin(), list.end());
      stack = std::move(items);
    };
  }
  if (kind == c10::prim::TupleConstruct) {
    return [](std::vector<c10::IValue>& stack) {
      auto tuple = c10::ivalue::Tuple::create(std::move(stack));
      stack.clear();
      stack.emplace_back(std::move(tuple));
    };
  }
  if (kind == c10::prim::TupleUnpack) {
    return [](std::vector<c10::IValue>& stack) {
      std::vector<c10::IValue> items = stack.at(0).toTupleRef().elements().vec();
      stack = std::move(items);
    };
  }
  jit::Operation op = n->getOperation();
  return [op](std::vector<c10::IValue>& stack) mutable { op(stack); };
}

// A scripted shape check, `if cond: raise ...`: an If without outputs whose branches are empty or only
// raise. Anything else with control flow is refused at import.
bool is_guard(const jit::Node* n) {
  if (n->kind() != c10::prim::If || n->outputs().size() != 0) return false;
  for (const jit::Block* block : n->blocks())
    for (const jit::Node* inner : block->nodes())
      if (inner->kind() != c10::prim::RaiseException && inner->kind() != c10::prim::Constant) return false;
  return true;
}

std::function<void(std::vector<c10::IValue>&)> guard_operation(const jit::Node* n, const std::string& where) {
  std::vector<bool> raises;
  for (const jit::Block* block : n->blocks()) {
    bool r = false;
    for (const jit::Node* inner : block->nodes()) r = r || inner->kind() == c10::prim::RaiseException;
    raises.push_back(r);
  }
  return [raises, where](std::vector<c10::IValue>& stack) {
    const bool taken_then = stack.at(0).toBool();
    stack.clear();
    if (raises[taken_then ? 0 : 1]) throw Error("the model's own input check failed at " + where);
  };
}

std::string first_line(const std::string& text) {
  const auto start = text.find_first_not_of(" \n");
  if (start == std::string::npos) return "";
  return text.substr(start, text.find('\n', start) - start);
}

}  // namespace

const std::vector<std::string>& supported_generic_ops() {
  static const std::vector<std::string> ops = {
      // activations
      "aten::relu", "aten::relu_", "aten::relu6", "aten::relu6_", "aten::hardtanh", "aten::hardtanh_",
      "aten::hardswish", "aten::hardswish_", "aten::silu", "aten::silu_", "aten::sigmoid", "aten::sigmoid_",
      "aten::hardsigmoid", "aten::hardsigmoid_", "aten::gelu", "aten::leaky_relu", "aten::leaky_relu_",
      "aten::tanh", "aten::softmax", "aten::log_softmax", "aten::layer_norm",
      // token mixing: attention scores and their weighted sums (two activation operands)
      "aten::matmul", "aten::bmm",
      // arithmetic and merges
      "aten::add", "aten::add_", "aten::sub", "aten::rsub", "aten::mul", "aten::mul_", "aten::div", "aten::pow",
      "aten::floor_divide", "aten::floordiv", "aten::remainder", "aten::cat", "aten::chunk", "aten::split",
      "aten::split_with_sizes",
      // pooling and reductions
      "aten::max_pool2d", "aten::avg_pool2d", "aten::adaptive_avg_pool2d", "aten::adaptive_max_pool2d",
      "aten::mean", "aten::sum",
      // shapes
      "aten::flatten", "aten::view", "aten::reshape", "aten::transpose", "aten::permute", "aten::contiguous",
      "aten::squeeze", "aten::unsqueeze", "aten::size", "aten::Int", "aten::dim", "aten::len",
      "aten::__getitem__", "aten::select", "aten::slice", "aten::constant_pad_nd", "aten::pad", "aten::dropout",
      "aten::expand", "aten::roll",
      // Swin's shifted-window attention mask, built from the input's shape
      "aten::new_zeros", "aten::fill_", "aten::masked_fill",
      "aten::dropout_", "aten::feature_dropout", "aten::clone",
      "prim::ListConstruct", "prim::ListUnpack", "prim::TupleConstruct", "prim::TupleUnpack",
      "prim::NumToTensor", "aten::gt", "aten::lt", "aten::ge", "aten::le", "aten::eq", "aten::ne", "aten::__not__"};
  return ops;
}

namespace {

jit::Module load_module(const std::string& path, ImportedModel& result) {
  if (!std::filesystem::is_regular_file(path)) throw Error(path + ": model file not found");
  verify_zip_crcs(path);
  jit::Module module;
  try {
    module = jit::load(path);
  } catch (const std::exception& e) {
    throw Error(path + ": not a TorchScript file (" + first_line(e.what()) + ")");
  }
  result.path = path;
  if (module.hasattr("input_size")) {
    const c10::IValue size = module.attr("input_size");
    if (!size.isIntList() || size.toIntVector().size() != 2)
      throw Error(path + ": attribute input_size must be a list [height, width] of ints");
    result.input_size = size.toIntVector();
  }
  if (module.hasattr("input_mean") && module.hasattr("input_std")) {
    result.has_preprocess = true;
    result.preprocess.mean = module.attr("input_mean").toDoubleVector();
    result.preprocess.std = module.attr("input_std").toDoubleVector();
  }
  if (!module.find_method("forward")) throw Error(path + ": TorchScript module has no forward method");
  module.eval();
  return module;
}

// freeze_module keeps batch_norm (and its statistics) and turns parameters into constants.
std::shared_ptr<jit::Graph> frozen_graph(const std::string& path, const jit::Module& module) {
  try {
    jit::Module frozen = jit::freeze_module(module);
    std::shared_ptr<jit::Graph> g = frozen.get_method("forward").graph()->copy();
    jit::Inline(*g);
    jit::RemoveTensorMutation(g);
    jit::ConstantPropagation(g);
    jit::EliminateDeadCode(g);
    return g;
  } catch (const c10::Error& e) {
    throw Error(path + ": cannot freeze the module (" + first_line(e.what()) + ")");
  }
}

// A layer's tensor that is NaN or infinite (or a negative variance) would only surface much later as a
// calibrator's empty range or a chance-level accuracy: refused here, naming the file and the tensor.
at::Tensor checked(const std::string& path, const std::string& module, const char* what, const at::Tensor& t,
                   bool nonnegative = false) {
  if (!t.defined()) return t;
  if (!at::isfinite(t).all().item<bool>())
    throw Error(path + ": '" + module + "' " + what + " holds NaN or infinite values");
  if (nonnegative && t.lt(0).any().item<bool>()) throw Error(path + ": '" + module + "' " + what + " has negative values");
  return t;
}

void import_conv(const std::string& path, const jit::Node* n, const std::string& module, Node& node) {
  const std::string kind = n->kind().toQualString();
  node.kind = OpKind::Conv;
  node.op = "conv2d";
  node.weight = checked(path, module, "weight", constant_input(path, n, 1, "weight").toTensor());
  node.bias = checked(path, module, "bias", optional_tensor(constant_input(path, n, 2, "bias")));
  node.conv.stride = constant_input(path, n, 3, "stride").toIntVector();
  node.conv.padding = constant_input(path, n, 4, "padding").toIntVector();
  node.conv.dilation = constant_input(path, n, 5, "dilation").toIntVector();
  if (kind == "aten::_convolution") {
    if (constant_input(path, n, 6, "transposed").toBool())
      throw Error(path + ": transposed convolution at '" + module + "' is not supported");
    node.conv.groups = constant_input(path, n, 8, "groups").toInt();
  } else {
    node.conv.groups = constant_input(path, n, 6, "groups").toInt();
  }
  if (node.weight.dim() != 4) throw Error(path + ": only 2-d convolutions are supported ('" + module + "')");
  node.inputs.resize(1);
}

void import_linear(const std::string& path, const jit::Node* n, const std::string& module, Node& node) {
  node.kind = OpKind::Linear;
  node.op = "linear";
  node.weight = checked(path, module, "weight", constant_input(path, n, 1, "weight").toTensor());
  node.bias = checked(path, module, "bias", optional_tensor(constant_input(path, n, 2, "bias")));
  node.inputs.resize(1);
}

void import_batch_norm(const std::string& path, const jit::Node* n, const std::string& module, Node& node) {
  node.kind = OpKind::BatchNorm;
  node.op = "batch_norm";
  node.bn.mean = checked(path, module, "running_mean", constant_input(path, n, 3, "running_mean").toTensor());
  node.bn.var = checked(path, module, "running_var", constant_input(path, n, 4, "running_var").toTensor(), true);
  const auto channels = node.bn.mean.numel();
  node.bn.gamma = checked(path, module, "weight", optional_tensor(constant_input(path, n, 1, "weight")));
  node.bn.beta = checked(path, module, "bias", optional_tensor(constant_input(path, n, 2, "bias")));
  if (!node.bn.gamma.defined()) node.bn.gamma = at::ones({channels});
  if (!node.bn.beta.defined()) node.bn.beta = at::zeros({channels});
  if (constant_input(path, n, 5, "training").toBool())
    throw Error(path + ": batch_norm at '" + module + "' is in training mode");
  node.bn.eps = constant_input(path, n, 7, "eps").toDouble();
  node.inputs.resize(1);
}

// Layers own their tensors; guards and whitelisted operators run through TorchScript's own operator.
void import_operation(const std::string& path, const jit::Node* n, const std::string& module, Node& node) {
  const std::string kind = n->kind().toQualString();
  const auto& generic = supported_generic_ops();
  if (kind == "aten::_convolution" || kind == "aten::conv2d") {
    import_conv(path, n, module, node);
  } else if (kind == "aten::linear") {
    import_linear(path, n, module, node);
  } else if (kind == "aten::batch_norm") {
    import_batch_norm(path, n, module, node);
  } else if (is_guard(n)) {
    node.run = guard_operation(n, (module.empty() ? "" : "'" + module + "' ") + node.source);
  } else if (std::find(generic.begin(), generic.end(), kind) != generic.end()) {
    try {
      node.run = prim_operation(n);
    } catch (const c10::Error& e) {
      throw Error(path + ": operator " + kind + " in '" + module + "' cannot run (" + first_line(e.what()) + ")");
    }
  } else {
    std::string where = module.empty() ? "" : " in '" + module + "'";
    if (!node.source.empty()) where += " (" + node.source + ")";
    throw Error(path + ": unsupported operator " + kind + where);
  }
  node.name = node.kind != OpKind::Generic ? (module.empty() ? node.op : module)
                                           : (module.empty() ? "" : module + "/") + kind.substr(kind.find("::") + 2);
  // LibTorch's error names the operator's arguments, not where it is: say which node and source line (a
  // transformer fed another token count fails at its position-embedding add).
  if (node.kind == OpKind::Generic && node.run) {
    const std::string where = "at '" + node.name + "'" + (node.source.empty() ? "" : " (" + node.source + ")") + ": ";
    node.run = [run = std::move(node.run), where](std::vector<c10::IValue>& stack) {
      try {
        run(stack);
      } catch (const c10::Error& e) {
        throw Error(where + first_line(e.what_without_backtrace()));
      }
    };
  }
}

// Layers are named by their module, but a module may compute several (nn.MultiheadAttention's input and
// output projections run as functional linears in its own scope): those get .<op><k> in graph order, so
// that overrides, reports and reconstruction units name each one.
void name_layers_apart(Graph& graph) {
  std::map<std::string, int> count;
  for (const Node& n : graph.nodes)
    if (n.is_layer()) ++count[n.name];
  std::map<std::string, int> seen;
  for (Node& n : graph.nodes)
    if (n.is_layer() && count[n.name] > 1) {
      const int k = seen[n.name]++;
      n.name += "." + n.op + std::to_string(k);
    }
}

}  // namespace

ImportedModel import_torchscript(const std::string& path) {
  ImportedModel result;
  const std::shared_ptr<jit::Graph> g = frozen_graph(path, load_module(path, result));
  Graph& graph = result.graph;
  std::unordered_map<const jit::Value*, int> ids;
  auto value_id = [&](const jit::Value* v) {
    auto it = ids.find(v);
    if (it != ids.end()) return it->second;
    const int id = graph.add_value(v->debugName());
    ids.emplace(v, id);
    return id;
  };
  for (const jit::Value* in : g->inputs()) {
    if (in->type()->kind() == c10::TypeKind::ClassType) continue;  // `self`, unused once frozen
    graph.inputs.push_back(value_id(in));
  }
  for (jit::Node* n : g->nodes()) {
    if (n->kind() == c10::prim::Constant) {
      auto v = jit::toIValue(n->output());
      if (!v) throw Error(path + ": unreadable constant at " + source_location(n));
      graph.constants.emplace_back(value_id(n->output()), *v);
      continue;
    }
    Node node;
    node.op = n->kind().toQualString();
    node.source = source_location(n);
    if (const c10::FunctionSchema* schema = n->maybeSchema()) node.schema = c10::toString(*schema);
    for (const jit::Value* in : n->inputs()) node.inputs.push_back(value_id(in));
    for (const jit::Value* out : n->outputs()) node.outputs.push_back(value_id(out));
    import_operation(path, n, module_path(n), node);
    graph.nodes.push_back(std::move(node));
  }
  for (const jit::Value* out : g->outputs()) graph.outputs.push_back(value_id(out));
  graph.remove_dead_nodes();
  name_layers_apart(graph);
  return result;
}

}  // namespace xdq
