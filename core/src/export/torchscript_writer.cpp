// The quantized model as TorchScript source: one statement per node of the folded graph, weights and
// tensor constants as buffers, fake quantization after every quantized value (the ops xdq's quantizers
// compute), compiled by LibTorch and saved.
#include <cmath>
#include <cstdio>
#include <sstream>

#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/frontend/function_schema_parser.h>

#include "writers.h"
#include "xdq/error.h"
#include "xdq/files.h"

namespace xdq::exporting {

std::string unique_identifier(const std::string& text, std::map<std::string, int>& taken) {
  std::string id;
  for (char c : text) id += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  if (id.empty() || std::isdigit(static_cast<unsigned char>(id[0]))) id = "t_" + id;
  const int seen = taken[id]++;
  return seen == 0 ? id : id + "_" + std::to_string(seen + 1);
}

namespace {

std::string float_literal(double v) {
  if (std::isnan(v)) return "float('nan')";
  if (std::isinf(v)) return v > 0 ? "float('inf')" : "float('-inf')";
  char text[32];
  std::snprintf(text, sizeof text, "%.17g", v);
  std::string s = text;
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

template <class T, class Print>
std::string list_literal(const std::vector<T>& items, const char* type, Print print) {
  if (items.empty()) return std::string("annotate(List[") + type + "], [])";
  std::string s = "[";
  for (std::size_t i = 0; i < items.size(); ++i) s += (i ? ", " : "") + print(items[i]);
  return s + "]";
}

std::string ints_literal(const std::vector<std::int64_t>& items) {
  return list_literal(items, "int", [](std::int64_t x) { return std::to_string(x); });
}

class SourceWriter {
 public:
  SourceWriter(const QuantizedModel& model, torch::jit::Module& module) : model_(model), graph_(model.graph()), module_(module) {
    for (const auto& [value, constant] : graph_.constants) constants_[value] = &constant;
    for (const ActivationQuantizer& a : model.activations()) quantizer_[a.value] = &a;
  }

  std::string source() {
    std::ostringstream s;
    s << "def forward(self, " << var(graph_.inputs.at(0)) << "):\n";
    for (int v : graph_.inputs) quantize(v, s);
    for (std::size_t i = 0; i < graph_.nodes.size(); ++i) node(static_cast<int>(i), s);
    s << "    return ";
    if (graph_.outputs.size() == 1) {
      s << arg(graph_.outputs[0]) << "\n";
    } else {
      s << "(";
      for (std::size_t k = 0; k < graph_.outputs.size(); ++k) s << (k ? ", " : "") << arg(graph_.outputs[k]);
      s << ")\n";
    }
    return s.str();
  }

 private:
  static std::string var(int v) { return "v" + std::to_string(v); }

  std::string buffer(const std::string& name, const at::Tensor& t) {
    const std::string id = unique_identifier(name, taken_);
    module_.register_buffer(id, t.detach().cpu().contiguous().clone());  // the file loads on any device
    return "self." + id;
  }

  std::string literal(int value, const c10::IValue& v) {
    if (v.isNone()) return "None";
    if (v.isBool()) return v.toBool() ? "True" : "False";
    if (v.isInt()) return std::to_string(v.toInt());
    if (v.isDouble()) return float_literal(v.toDouble());
    if (v.isString()) {
      std::string s = "\"";
      for (char c : v.toStringRef()) s += (c == '"' || c == '\\') ? std::string("\\") + c : std::string(1, c);
      return s + "\"";
    }
    if (v.isIntList()) return ints_literal(v.toIntVector());
    if (v.isDoubleList()) return list_literal(v.toDoubleVector(), "float", float_literal);
    if (v.isBoolList()) {
      std::vector<bool> items;
      for (bool b : v.toBoolList()) items.push_back(b);
      return list_literal(items, "bool", [](bool b) { return std::string(b ? "True" : "False"); });
    }
    if (v.isTensor()) return buffer("constant_" + std::to_string(value), v.toTensor());
    throw Error("TorchScript export: constant '" + graph_.value_names.at(value) + "' of type " + v.tagKind() +
                " has no literal");
  }

  std::string arg(int v) {
    auto c = constants_.find(v);
    return c != constants_.end() ? literal(v, *c->second) : var(v);
  }

  // Fake quantization of value v, as xdq's activation quantizer computes it (the same ATen ops).
  void quantize(int v, std::ostream& s) {
    auto it = quantizer_.find(v);
    if (it == quantizer_.end()) return;
    const QParams& q = it->second->qparams;
    s << "    " << var(v) << " = ";
    if (q.per_channel()) {
      const std::string name = it->second->name;
      s << "torch.fake_quantize_per_channel_affine(" << var(v) << ", " << buffer(name + "_scale", q.scale) << ", "
        << buffer(name + "_zero_point", q.zero_point) << ", " << q.axis;
    } else {
      s << "torch.fake_quantize_per_tensor_affine(" << var(v) << ", " << float_literal(q.scale.item<float>()) << ", "
        << q.zero_point.item<int>();
    }
    s << ", " << q.qmin << ", " << q.qmax << ")\n";
  }

  std::string outputs(const Node& n) const {
    std::string s;
    for (std::size_t k = 0; k < n.outputs.size(); ++k) s += (k ? ", " : "") + var(n.outputs[k]);
    return s;
  }

  std::string layer_call(int index, const Node& n) {
    std::ostringstream s;
    const at::Tensor weight = n.is_layer() ? layer_weight(index) : at::Tensor();
    const std::string bias = n.bias.defined() ? buffer(n.name + ".bias", n.bias) : "None";
    if (n.kind == OpKind::Conv) {
      s << "torch.conv2d(" << arg(n.inputs[0]) << ", " << buffer(n.name + ".weight", weight) << ", " << bias << ", "
        << ints_literal(n.conv.stride) << ", " << ints_literal(n.conv.padding) << ", " << ints_literal(n.conv.dilation)
        << ", " << n.conv.groups << ")";
    } else if (n.kind == OpKind::Linear) {
      s << "torch.linear(" << arg(n.inputs[0]) << ", " << buffer(n.name + ".weight", weight) << ", " << bias << ")";
    } else {
      s << "torch.batch_norm(" << arg(n.inputs[0]) << ", " << buffer(n.name + ".weight", n.bn.gamma) << ", "
        << buffer(n.name + ".bias", n.bn.beta) << ", " << buffer(n.name + ".running_mean", n.bn.mean) << ", "
        << buffer(n.name + ".running_var", n.bn.var) << ", False, 0.1, " << float_literal(n.bn.eps) << ", True)";
    }
    return s.str();
  }

  at::Tensor layer_weight(int index) const {
    for (const QuantizedLayer& l : model_.layers())
      if (l.node == index) return l.quantized_weight;
    return graph_.nodes[index].weight;  // a layer the scheme leaves in float
  }

  // An ATen operator as `torch.<name>` (the builtins LibTorch's compiler resolves), keyword-only arguments
  // named as its schema says.
  std::string operator_call(const Node& n) {
    if (n.schema.empty() || n.op.rfind("aten::", 0) != 0)
      throw Error("TorchScript export: operator " + n.op + " at '" + n.name + "' has no TorchScript builtin");
    const c10::FunctionSchema schema = torch::jit::parseSchema(n.schema);
    std::string s = "torch." + n.op.substr(6) + "(";
    for (std::size_t k = 0; k < n.inputs.size(); ++k) {
      s += k ? ", " : "";
      if (k < schema.arguments().size() && schema.arguments()[k].kwarg_only()) s += schema.arguments()[k].name() + "=";
      s += arg(n.inputs[k]);
    }
    return s + ")";
  }

  void node(int index, std::ostream& s) {
    const Node& n = graph_.nodes[index];
    if (n.op == "prim::If") return;  // the model's own input check (a guard): not needed to compute
    std::vector<std::string> in;
    for (int v : n.inputs) in.push_back(arg(v));
    auto joined = [&](const char* open, const char* close) {
      std::string t = open;
      for (std::size_t k = 0; k < in.size(); ++k) t += (k ? ", " : "") + in[k];
      return t + close;
    };
    std::string rhs;
    if (n.kind != OpKind::Generic) rhs = layer_call(index, n);
    else if (n.op == "prim::ListConstruct") rhs = in.empty() ? "annotate(List[int], [])" : joined("[", "]");
    else if (n.op == "prim::TupleConstruct") rhs = joined("(", in.size() == 1 ? ",)" : ")");
    else if (n.op == "prim::ListUnpack" || n.op == "prim::TupleUnpack") rhs = in.at(0);
    else if (n.op == "aten::__getitem__") rhs = in.at(0) + "[" + in.at(1) + "]";
    else rhs = operator_call(n);
    const bool unpack_one = (n.op == "prim::ListUnpack" || n.op == "prim::TupleUnpack") && n.outputs.size() == 1;
    s << "    " << outputs(n) << " = " << rhs << (unpack_one ? "[0]" : "") << "\n";
    for (int v : n.outputs) quantize(v, s);
  }

  const QuantizedModel& model_;
  const Graph& graph_;
  torch::jit::Module& module_;
  std::map<int, const c10::IValue*> constants_;
  std::map<int, const ActivationQuantizer*> quantizer_;
  std::map<std::string, int> taken_;
};

}  // namespace

void write_torchscript(const QuantizedModel& model, const Preprocess& pre, const at::Tensor& example,
                       const std::string& path) {
  torch::jit::Module module("__torch__.xdq.QuantizedModel");
  SourceWriter writer(model, module);
  const std::string source = writer.source();
  try {
    module.define(source);
  } catch (const c10::Error& e) {
    throw Error("TorchScript export: the generated code does not compile (" + std::string(e.what_without_backtrace()) +
                ")\n" + source);
  }
  module.register_attribute("input_size", c10::ListType::ofInts(),
                            c10::IValue(std::vector<std::int64_t>{example.size(2), example.size(3)}));
  module.register_attribute("input_mean", c10::ListType::ofFloats(), c10::IValue(pre.mean));
  module.register_attribute("input_std", c10::ListType::ofFloats(), c10::IValue(pre.std));
  module.eval();
  save_module(module, path);
}

void save_module(const torch::jit::Module& module, const std::string& path) {
  std::ostringstream bytes;
  module.save(bytes);
  write_file_atomically(path, [&](std::ostream& out) { out << bytes.str(); });
}

}  // namespace xdq::exporting
