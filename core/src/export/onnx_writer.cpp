// xdq's folded graph as an ONNX model (opset 13), written with ONNX's own protobuf classes. Integers the
// model computes from shapes (x.size(0), channel-shuffle views) are not exported as ops: they come from
// two runs of the graph at different batch sizes, and only the batch dimension may differ between them.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>

#include <onnx/onnx_pb.h>

#include "writers.h"
#include "xdq/error.h"

namespace xdq::exporting {

namespace {

// Opset 13 (per-axis QuantizeLinear); the OpenCV form is opset 10, the last whose Clip takes its bounds as
// attributes, the only Clip OpenCV 4.6 imports (its activations are per-tensor, which opset 10 can say).
constexpr int kOpset = 13, kOpenCvOpset = 10;
constexpr int kIrVersion = 7;  // the IR version of opset 13 (opset 10 models may declare it too)

int onnx_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return onnx::TensorProto::FLOAT;
    case at::kChar: return onnx::TensorProto::INT8;
    case at::kByte: return onnx::TensorProto::UINT8;
    case at::kInt: return onnx::TensorProto::INT32;
    case at::kLong: return onnx::TensorProto::INT64;
    default: throw Error(std::string("ONNX export: no ONNX type for ") + at::toString(t));
  }
}

std::int64_t normalized_dim(std::int64_t dim, std::int64_t rank) { return dim < 0 ? dim + rank : dim; }

class OnnxBuilder {
 public:
  OnnxBuilder(const QuantizedModel& model, const std::vector<c10::IValue>& a, const std::vector<c10::IValue>& b,
              OnnxForm form)
      : model_(model), graph_(model.graph()), a_(a), b_(b), form_(form), name_(graph_.num_values),
        quantized_(graph_.num_values), list_(graph_.num_values), skip_(graph_.nodes.size(), false),
        layer_of_(graph_.nodes.size(), -1), opset_(form == OnnxForm::OpenCv ? kOpenCvOpset : kOpset) {
    for (std::size_t i = 0; i < model.activations().size(); ++i) quantizer_[model.activations()[i].value] = static_cast<int>(i);
    for (std::size_t i = 0; i < model.layers().size(); ++i) layer_of_[model.layers()[i].node] = static_cast<int>(i);
    out_.weights.resize(model.layers().size());
    g_ = proto_.mutable_graph();
  }

  OnnxModel build(const std::string& name) {
    proto_.set_ir_version(kIrVersion);
    proto_.set_producer_name("xdq");
    proto_.set_model_version(1);
    auto* opset = proto_.add_opset_import();
    opset->set_domain("");
    opset->set_version(opset_);
    g_->set_name(name);
    if (graph_.inputs.size() != 1) throw Error("ONNX export: models with one input only");
    const int input = graph_.inputs[0];
    name_[input] = fresh("input");
    describe(g_->add_input(), name_[input], a_[input].toTensor(), b_[input].toTensor());
    quantize_activation(input);
    for (std::size_t i = 0; i < graph_.nodes.size(); ++i)
      if (!skip_[i]) node(static_cast<int>(i));
    for (int v : graph_.outputs) {
      const std::vector<std::string> names = list_[v].empty() ? std::vector<std::string>{tensor(v, "model output")} : list_[v];
      const std::vector<at::Tensor> ta = tensors(a_[v]), tb = tensors(b_[v]);
      for (std::size_t k = 0; k < names.size(); ++k) describe(g_->add_output(), names[k], ta.at(k), tb.at(k));
    }
    out_.bytes = proto_.SerializeAsString();
    return std::move(out_);
  }

 private:
  static std::vector<at::Tensor> tensors(const c10::IValue& v) {
    if (v.isTensor()) return {v.toTensor()};
    if (v.isTensorList()) return v.toTensorVector();
    std::vector<at::Tensor> out;
    if (v.isTuple())
      for (const auto& e : v.toTupleRef().elements()) out.push_back(e.toTensor());
    return out;
  }

  // A value's type with its shape; a dimension that differs between the two runs is the batch, "N".
  static void describe(onnx::ValueInfoProto* info, const std::string& name, const at::Tensor& a, const at::Tensor& b) {
    info->set_name(name);
    auto* type = info->mutable_type()->mutable_tensor_type();
    type->set_elem_type(onnx_type(a.scalar_type()));
    auto* shape = type->mutable_shape();
    for (std::int64_t d = 0; d < a.dim(); ++d) {
      auto* dim = shape->add_dim();
      if (a.size(d) != b.size(d)) dim->set_dim_param("N");
      else dim->set_dim_value(a.size(d));
    }
  }

  // `base`, or base#2, base#3, ... : unique among `taken` (tensor names by default; nodes have their own).
  std::string fresh(const std::string& base) { return fresh(base, tensor_names_); }
  static std::string fresh(const std::string& base, std::set<std::string>& taken) {
    std::string name = base.empty() ? "t" : base;
    for (int k = 2; taken.count(name); ++k) name = base + "#" + std::to_string(k);
    taken.insert(name);
    return name;
  }

  [[noreturn]] void unsupported(const Node& n, const std::string& why) const {
    throw Error("ONNX export: " + n.op + " at '" + n.name + "': " + why);
  }

  std::string tensor(int v, const std::string& where) const {
    if (name_[v].empty())
      throw Error("ONNX export: value '" + graph_.value_names.at(v) + "' (" + where + ") is not a tensor the writer produced");
    return name_[v];
  }

  onnx::NodeProto* add(const std::string& op, const std::vector<std::string>& in, const std::vector<std::string>& out,
                       const std::string& name) {
    onnx::NodeProto* n = g_->add_node();
    n->set_op_type(op);
    // OpenCV names a layer after its node, else after the node's first output: unnamed there, so a
    // tensor's name finds its layer (runtime.h reads activations by name).
    if (form_ != OnnxForm::OpenCv) n->set_name(fresh(name + "/" + op, node_names_));
    for (const auto& s : in) n->add_input(s);
    for (const auto& s : out) n->add_output(s);
    return n;
  }
  static void attr(onnx::NodeProto* n, const std::string& name, std::int64_t v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }
  static void attr(onnx::NodeProto* n, const std::string& name, const std::vector<std::int64_t>& v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (auto x : v) a->add_ints(x);
  }
  static void attr_float(onnx::NodeProto* n, const std::string& name, double v) {
    auto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(static_cast<float>(v));
  }

  std::string initializer(const std::string& base, const at::Tensor& value) {
    const at::Tensor t = value.detach().cpu().contiguous();  // the graph may live on a GPU
    onnx::TensorProto* init = g_->add_initializer();
    init->set_name(fresh(base));
    init->set_data_type(onnx_type(t.scalar_type()));
    for (auto d : t.sizes()) init->add_dims(d);
    init->set_raw_data(std::string(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size()));
    return init->name();
  }
  std::string scalar(const std::string& base, double v) { return initializer(base, at::scalar_tensor(v, at::kFloat)); }
  std::string int64s(const std::string& base, const std::vector<std::int64_t>& v) {
    return initializer(base, at::tensor(v, at::kLong));
  }

  // Clip to [lo, hi]: bounds as inputs from opset 11, as attributes before.
  std::string clip(const std::string& x, double lo, double hi, const std::string& out, const std::string& where) {
    if (opset_ >= 11) {
      add("Clip", {x, scalar(out + "_min", lo), scalar(out + "_max", hi)}, {out}, where);
    } else {
      auto* c = add("Clip", {x}, {out}, where);
      attr_float(c, "min", lo);
      attr_float(c, "max", hi);
    }
    return out;
  }
  // Axes of Split, Squeeze, Unsqueeze, ReduceSum: an input from opset 13, an attribute before.
  void axes(onnx::NodeProto* n, const std::string& attribute, const std::vector<std::int64_t>& values, const std::string& base) {
    if (opset_ >= 13) n->add_input(int64s(base, values));
    else attr(n, attribute, values);
  }

  // ---- Quantization

  struct Grid {
    at::ScalarType type;
    std::int64_t shift;  // added to xdq's integer codes (OpenCV's int8 for an unsigned grid: -128)
  };
  Grid grid(const QParams& q, const std::string& what) const {
    const bool signed_container = form_ == OnnxForm::OpenCv || q.qmin < 0;
    const Grid g{signed_container ? at::kChar : at::kByte, form_ == OnnxForm::OpenCv && q.qmin >= 0 ? -128 : 0};
    const std::int64_t lo = signed_container ? -128 : 0, hi = signed_container ? 127 : 255;
    if (q.qmin + g.shift < lo || q.qmax + g.shift > hi)
      throw Error("ONNX export: " + what + " has the grid [" + std::to_string(q.qmin) + ", " + std::to_string(q.qmax) +
                  "], wider than 8 bits");
    return g;
  }

  void quantize_activation(int v) {
    auto it = quantizer_.find(v);
    if (it == quantizer_.end() || !quantized_[v].empty()) return;
    const ActivationQuantizer& a = model_.activations()[it->second];
    const std::string f = tensor(v, a.name);
    out_.activations[it->second] = f;
    if (form_ == OnnxForm::Float) return;
    const QParams& q = a.qparams;
    const Grid gr = grid(q, "activation '" + a.name + "'");
    if (q.per_channel() && opset_ < 13) throw Error("ONNX export: activation '" + a.name + "': per-channel (opset " +
                                                    std::to_string(opset_) + " quantizes per tensor)");
    std::string x = f;
    if (q.qmax - q.qmin < 255) {  // a grid narrower than its 8-bit container: clip to it first
      if (q.per_channel()) throw Error("ONNX export: activation '" + a.name + "': per-channel grid narrower than 8 bits");
      const double s = q.scale.item<float>(), z = q.zero_point.item<int>();
      x = clip(f, (q.qmin - z) * s, (q.qmax - z) * s, fresh(f + "_clipped"), a.name);
    }
    const std::string scale = initializer(f + "_scale", q.scale.to(at::kFloat));
    const std::string zero = initializer(f + "_zero_point", (q.zero_point.to(at::kLong) + gr.shift).to(gr.type));
    quantized_[v] = fresh(f + "_quantized");
    params_[v] = {scale, zero};
    auto* qn = add("QuantizeLinear", {x, scale, zero}, {quantized_[v]}, a.name);
    const std::string dq = fresh(f + "_dequant");
    auto* dn = add("DequantizeLinear", {quantized_[v], scale, zero}, {dq}, a.name);
    if (q.per_channel()) {
      attr(qn, "axis", q.axis);
      attr(dn, "axis", q.axis);
    }
    name_[v] = dq;
    out_.dequantized[it->second] = dq;
  }

  // The integer codes of a layer's rounded weight; an error if the weight is off its grid.
  at::Tensor weight_codes(const QuantizedLayer& l, const Node& n) const {
    const QParams& q = l.qparams;
    std::vector<std::int64_t> shape(l.quantized_weight.dim(), 1);
    shape[0] = -1;
    const at::Tensor s = q.per_channel() ? q.scale.reshape(shape) : q.scale;
    const at::Tensor z = (q.per_channel() ? q.zero_point.reshape(shape) : q.zero_point).to(at::kFloat);
    const at::Tensor codes = at::round(l.quantized_weight / s) + z;
    const double off = ((codes - z) * s - l.quantized_weight).abs().div(s).max().item<double>();
    if (codes.min().item<double>() < q.qmin || codes.max().item<double>() > q.qmax || off > 1e-3)
      throw Error("ONNX export: '" + n.name + "': the rounded weight is not on its quantization grid (" +
                  std::to_string(off) + " steps off)");
    return codes;
  }

  // QDQ form: integer initializer -> DequantizeLinear. Returns the dequantized weight's name.
  std::string dequantized_weight(const QuantizedLayer& l, const Node& n) {
    const QParams& q = l.qparams;
    const Grid gr = grid(q, "weight of '" + n.name + "'");
    const std::string w = initializer(n.name + ".weight_quantized", (weight_codes(l, n) + gr.shift).to(gr.type));
    const std::string scale = initializer(n.name + ".weight_scale", q.scale.to(at::kFloat));
    const std::string zero = initializer(n.name + ".weight_zero_point", (q.zero_point.to(at::kLong) + gr.shift).to(gr.type));
    const std::string out = fresh(n.name + ".weight");
    auto* dn = add("DequantizeLinear", {w, scale, zero}, {out}, n.name);
    if (q.per_channel()) attr(dn, "axis", q.axis);
    return out;
  }

  // ---- Layers

  void conv_attrs(onnx::NodeProto* c, const Node& n) const {
    attr(c, "kernel_shape", std::vector<std::int64_t>{n.weight.size(2), n.weight.size(3)});
    attr(c, "strides", n.conv.stride);
    attr(c, "pads", std::vector<std::int64_t>{n.conv.padding[0], n.conv.padding[1], n.conv.padding[0], n.conv.padding[1]});
    attr(c, "dilations", n.conv.dilation);
    attr(c, "group", n.conv.groups);
  }

  // OpenCV form: QLinearConv when input, weights and output allow it (export.h); false otherwise.
  bool qlinear_conv(int index, const QuantizedLayer& l) {
    const Node& n = graph_.nodes[index];
    const int in = n.inputs[0], out = n.outputs[0];
    if (n.kind != OpKind::Conv || quantized_[in].empty() || l.qparams.zero_point.ne(0).any().item<bool>() ||
        l.qparams.qmin < -128 || l.qparams.qmax > 127)
      return false;
    int target = out, relu = -1;
    if (!quantizer_.count(out)) {
      const std::vector<int> readers = graph_.consumers(out);
      const bool is_output = std::find(graph_.outputs.begin(), graph_.outputs.end(), out) != graph_.outputs.end();
      if (readers.size() != 1 || is_output) return false;
      const Node& r = graph_.nodes[readers[0]];
      if (r.op != "aten::relu" && r.op != "aten::relu_") return false;
      target = r.outputs[0];
      relu = readers[0];
      if (!quantizer_.count(target)) return false;
      const QParams& qt = model_.activations()[quantizer_[target]].qparams;
      if (qt.per_channel() || qt.zero_point.item<int>() != qt.qmin) return false;  // ReLU = saturation at code qmin
    }
    const ActivationQuantizer& ta = model_.activations()[quantizer_[target]];
    const QParams& qt = ta.qparams;
    if (qt.per_channel() || qt.qmax - qt.qmin != 255) return false;
    const Grid gt = grid(qt, "activation '" + ta.name + "'");
    const QParams& qi = model_.activations()[quantizer_[in]].qparams;
    const std::string f = fresh(graph_.nodes[relu >= 0 ? relu : index].name);
    const std::string scale = initializer(f + "_scale", qt.scale.to(at::kFloat));
    const std::string zero = initializer(f + "_zero_point", (qt.zero_point.to(at::kLong) + gt.shift).to(at::kChar));
    const at::Tensor w_scale = l.qparams.per_channel() ? l.qparams.scale.to(at::kFloat)
                                                       : at::full({n.weight.size(0)}, l.qparams.scale.item<float>(),
                                                                  n.weight.options().dtype(at::kFloat));
    std::vector<std::string> inputs = {quantized_[in], params_[in].first, params_[in].second,
                                       initializer(n.name + ".weight_int8", weight_codes(l, n).to(at::kChar)),
                                       initializer(n.name + ".weight_scale", w_scale),
                                       initializer(n.name + ".weight_zero_point", at::zeros({n.weight.size(0)}, at::kChar)),
                                       scale, zero};
    if (n.bias.defined()) {
      const at::Tensor bias_scale = w_scale * qi.scale.item<float>();
      inputs.push_back(initializer(n.name + ".bias_int32", at::round(n.bias / bias_scale).clamp(-2147483648.0, 2147483647.0).to(at::kInt)));
    }
    quantized_[target] = fresh(f + "_quantized");
    params_[target] = {scale, zero};
    conv_attrs(add("QLinearConv", inputs, {quantized_[target]}, n.name), n);
    name_[target] = fresh(f + "_dequant");
    add("DequantizeLinear", {quantized_[target], scale, zero}, {name_[target]}, n.name);
    out_.activations[quantizer_[target]] = f;
    out_.dequantized[quantizer_[target]] = name_[target];
    if (relu >= 0) skip_[relu] = true;
    ++out_.int8_layers;
    return true;
  }

  void layer(int index) {
    const Node& n = graph_.nodes[index];
    const int li = layer_of_[index];
    const QuantizedLayer* l = li >= 0 ? &model_.layers()[li] : nullptr;
    if (form_ == OnnxForm::OpenCv && l && qlinear_conv(index, *l)) return;
    const std::string x = tensor(n.inputs[0], n.name + " input");
    const std::string w = form_ == OnnxForm::Qdq && l ? dequantized_weight(*l, n)
                                                       : initializer(n.name + ".weight", l ? l->quantized_weight : n.weight);
    if (l) out_.weights[li] = w;
    std::vector<std::string> in = {x, w};
    if (n.bias.defined()) in.push_back(initializer(n.name + ".bias", n.bias));
    const int out = n.outputs[0];
    name_[out] = fresh(n.name);
    if (n.kind == OpKind::Conv) {
      conv_attrs(add("Conv", in, {name_[out]}, n.name), n);
    } else {
      if (a_[n.inputs[0]].toTensor().dim() != 2) unsupported(n, "linear on an input of rank other than 2");
      attr(add("Gemm", in, {name_[out]}, n.name), "transB", 1);
    }
    quantize_activation(out);
  }

  void batch_norm(const Node& n) {
    const int out = n.outputs[0];
    name_[out] = fresh(n.name);
    auto* bn = add("BatchNormalization",
                   {tensor(n.inputs[0], n.name), initializer(n.name + ".weight", n.bn.gamma), initializer(n.name + ".bias", n.bn.beta),
                    initializer(n.name + ".running_mean", n.bn.mean), initializer(n.name + ".running_var", n.bn.var)},
                   {name_[out]}, n.name);
    attr_float(bn, "epsilon", n.bn.eps);
    quantize_activation(out);
  }

  // ---- Other operators

  std::int64_t int_input(const Node& n, std::size_t k) const {
    const c10::IValue& v = a_[n.inputs.at(k)];
    if (!v.isInt()) unsupported(n, "argument " + std::to_string(k) + " is not an integer");
    return v.toInt();
  }
  std::vector<std::int64_t> ints_input(const Node& n, std::size_t k) const {
    const c10::IValue& v = a_[n.inputs.at(k)];
    if (v.isInt()) return {v.toInt()};
    if (!v.isIntList()) unsupported(n, "argument " + std::to_string(k) + " is not a list of integers");
    return v.toIntVector();
  }
  // An int[2] argument (kernel, stride, padding, dilation): one value stands for both.
  std::vector<std::int64_t> pair_input(const Node& n, std::size_t k) const {
    std::vector<std::int64_t> v = ints_input(n, k);
    if (v.size() == 1) v.push_back(v[0]);
    if (v.size() != 2 && !v.empty()) unsupported(n, "argument " + std::to_string(k) + " is not a pair");
    return v;
  }
  double number_input(const Node& n, std::size_t k) const {
    const c10::IValue& v = a_[n.inputs.at(k)];
    if (!v.isDouble() && !v.isInt()) unsupported(n, "argument " + std::to_string(k) + " is not a number");
    return v.toScalar().toDouble();
  }
  // A tensor operand: a produced tensor, or a constant (a scalar becomes a float initializer).
  std::string operand(const Node& n, std::size_t k) {
    const int v = n.inputs.at(k);
    if (!name_[v].empty()) return name_[v];
    if (a_[v].isTensor()) return initializer(n.name + ".constant", a_[v].toTensor());
    return scalar(n.name + ".constant", number_input(n, k));
  }
  bool is_static(int v) const { return !a_[v].isTensor() && list_[v].empty() && name_[v].empty(); }
  bool same_in_both_runs(int v) const {
    const c10::IValue &x = a_[v], &y = b_[v];
    if (x.isInt()) return y.isInt() && x.toInt() == y.toInt();
    if (x.isIntList()) return y.isIntList() && x.toIntVector() == y.toIntVector();
    return true;
  }

  // Emits `op` with the tensor inputs listed, into a fresh tensor for the node's first output.
  onnx::NodeProto* unary(const Node& n, const std::string& op, std::vector<std::string> in = {}) {
    if (in.empty()) in = {tensor(n.inputs[0], n.name)};
    name_[n.outputs[0]] = fresh(n.name);
    return add(op, in, {name_[n.outputs[0]]}, n.name);
  }
  std::string intermediate(const Node& n, const std::string& op, const std::vector<std::string>& in) {
    const std::string out = fresh(n.name + "/" + op);
    add(op, in, {out}, n.name);
    return out;
  }

  // Reshape to the output's shape in the example runs; the batch dimension copied from the input.
  void reshape(const Node& n) {
    const at::Tensor in_a = a_[n.inputs[0]].toTensor(), in_b = b_[n.inputs[0]].toTensor();
    const at::Tensor out_a = a_[n.outputs[0]].toTensor(), out_b = b_[n.outputs[0]].toTensor();
    std::vector<std::int64_t> shape;
    for (std::int64_t d = 0; d < out_a.dim(); ++d) {
      if (out_a.size(d) == out_b.size(d)) {
        shape.push_back(out_a.size(d));
      } else if (d == 0 && in_a.size(0) != in_b.size(0) && out_a.size(0) == in_a.size(0) && out_b.size(0) == in_b.size(0)) {
        shape.push_back(0);  // ONNX: copy the input's dimension
      } else {
        unsupported(n, "an output dimension other than the batch depends on the batch size");
      }
    }
    unary(n, "Reshape", {tensor(n.inputs[0], n.name), int64s(n.name + ".shape", shape)});
  }

  void split(const Node& n) {
    const std::vector<at::Tensor> parts = a_[n.outputs[0]].toTensorVector();
    const std::int64_t rank = a_[n.inputs[0]].toTensor().dim();
    const std::int64_t dim = normalized_dim(int_input(n, 2), rank);
    std::vector<std::int64_t> sizes;
    for (const auto& p : parts) sizes.push_back(p.size(dim));
    std::vector<std::string> outs;
    for (std::size_t k = 0; k < parts.size(); ++k) outs.push_back(fresh(n.name + ":" + std::to_string(k)));
    auto* node = add("Split", {tensor(n.inputs[0], n.name)}, outs, n.name);
    attr(node, "axis", dim);
    const bool equal = std::all_of(sizes.begin(), sizes.end(), [&](std::int64_t s) { return s == sizes[0]; });
    if (!equal) axes(node, "split", sizes, n.name + ".split");  // equal parts: the default
    list_[n.outputs[0]] = outs;
  }

  void pool(const Node& n, bool max) {
    const std::vector<std::int64_t> k = pair_input(n, 1);
    std::vector<std::int64_t> s = pair_input(n, 2), p = pair_input(n, 3);
    if (s.empty()) s = k;  // stride omitted: the kernel
    if (k.empty() || p.empty()) unsupported(n, "an empty kernel or padding");
    auto* node = unary(n, max ? "MaxPool" : "AveragePool");
    attr(node, "kernel_shape", k);
    attr(node, "strides", s);
    attr(node, "pads", std::vector<std::int64_t>{p[0], p[1], p[0], p[1]});
    if (max) {
      attr(node, "dilations", pair_input(n, 4));
      attr(node, "ceil_mode", a_[n.inputs[5]].toBool() ? 1 : 0);
    } else {
      attr(node, "ceil_mode", a_[n.inputs[4]].toBool() ? 1 : 0);
      attr(node, "count_include_pad", a_[n.inputs[5]].toBool() ? 1 : 0);
      if (!a_[n.inputs[6]].isNone()) unsupported(n, "divisor_override");
    }
  }

  void adaptive_pool(const Node& n, bool max) {
    if (max && !graph_.consumers(n.outputs.at(1)).empty()) unsupported(n, "the indices output is read");
    const std::vector<std::int64_t> size = ints_input(n, 1);
    const at::Tensor x = a_[n.inputs[0]].toTensor();
    if (size == std::vector<std::int64_t>{1, 1}) {
      unary(n, max ? "GlobalMaxPool" : "GlobalAveragePool");
      return;
    }
    if (x.size(2) % size[0] != 0 || x.size(3) % size[1] != 0) unsupported(n, "an output size that does not divide the input");
    const std::vector<std::int64_t> k = {x.size(2) / size[0], x.size(3) / size[1]};
    auto* node = unary(n, max ? "MaxPool" : "AveragePool");
    attr(node, "kernel_shape", k);
    attr(node, "strides", k);
  }

  void reduce(const Node& n, bool mean) {
    const std::int64_t rank = a_[n.inputs[0]].toTensor().dim();
    std::vector<std::int64_t> axes;
    for (auto d : ints_input(n, 1)) axes.push_back(normalized_dim(d, rank));
    const bool keep = a_[n.inputs[2]].toBool();
    if (mean) {
      auto* node = unary(n, "ReduceMean");
      attr(node, "axes", axes);
      attr(node, "keepdims", keep ? 1 : 0);
    } else {
      auto* node = unary(n, "ReduceSum");
      this->axes(node, "axes", axes, n.name + ".axes");
      attr(node, "keepdims", keep ? 1 : 0);
    }
  }

  void binary(const Node& n, const std::string& op) {
    if (n.inputs.size() > 2 && number_input(n, 2) != 1.0) unsupported(n, "alpha other than 1");
    unary(n, op, {operand(n, 0), operand(n, 1)});
  }

  void activation(const Node& n, const std::string& op) {
    const std::string x = tensor(n.inputs[0], n.name);
    if (op == "relu") unary(n, "Relu");
    else if (op == "relu6") name_[n.outputs[0]] = clip(x, 0, 6, fresh(n.name), n.name);
    else if (op == "hardtanh") name_[n.outputs[0]] = clip(x, number_input(n, 1), number_input(n, 2), fresh(n.name), n.name);
    else if (op == "sigmoid") unary(n, "Sigmoid");
    else if (op == "tanh") unary(n, "Tanh");
    else if (op == "leaky_relu") attr_float(unary(n, "LeakyRelu"), "alpha", number_input(n, 1));
    else if (op == "hardsigmoid" || op == "hardswish") {
      // HardSwish is opset 14: x * HardSigmoid(x), HardSigmoid = clip(x / 6 + 1 / 2, 0, 1) as PyTorch's.
      auto* hs = op == "hardsigmoid" ? unary(n, "HardSigmoid") : add("HardSigmoid", {x}, {fresh(n.name + "/hardsigmoid")}, n.name);
      attr_float(hs, "alpha", 1.0 / 6.0);
      attr_float(hs, "beta", 0.5);
      if (op == "hardswish") unary(n, "Mul", {x, hs->output(0)});
    } else if (op == "silu") unary(n, "Mul", {x, intermediate(n, "Sigmoid", {x})});
    else if (op == "gelu") {
      if (n.inputs.size() > 1 && a_[n.inputs[1]].isString() && a_[n.inputs[1]].toStringRef() != "none")
        unsupported(n, "the tanh approximation");
      const std::string erf = intermediate(n, "Erf", {intermediate(n, "Div", {x, scalar(n.name + ".sqrt2", std::sqrt(2.0))})});
      const std::string half_x = intermediate(n, "Mul", {x, scalar(n.name + ".half", 0.5)});
      unary(n, "Mul", {half_x, intermediate(n, "Add", {erf, scalar(n.name + ".one", 1.0)})});
    } else if (op == "softmax" || op == "log_softmax") {
      const std::int64_t rank = a_[n.inputs[0]].toTensor().dim(), axis = normalized_dim(int_input(n, 1), rank);
      if (opset_ < 13 && axis != rank - 1) unsupported(n, "softmax over a dimension other than the last (opset 10)");
      attr(unary(n, op == "softmax" ? "Softmax" : "LogSoftmax"), "axis", axis);
    }
  }

  void shape_op(const Node& n, const std::string& op) {
    const std::int64_t rank = a_[n.inputs[0]].toTensor().dim();
    if (op == "flatten") {
      const std::int64_t start = normalized_dim(int_input(n, 1), rank), end = normalized_dim(int_input(n, 2), rank);
      if (start == 1 && end == rank - 1) attr(unary(n, "Flatten"), "axis", 1);
      else reshape(n);
    } else if (op == "view" || op == "reshape") {
      reshape(n);
    } else if (op == "transpose") {
      std::vector<std::int64_t> perm(rank);
      for (std::int64_t d = 0; d < rank; ++d) perm[d] = d;
      std::swap(perm[normalized_dim(int_input(n, 1), rank)], perm[normalized_dim(int_input(n, 2), rank)]);
      attr(unary(n, "Transpose"), "perm", perm);
    } else if (op == "permute") {
      std::vector<std::int64_t> perm;
      for (auto d : ints_input(n, 1)) perm.push_back(normalized_dim(d, rank));
      attr(unary(n, "Transpose"), "perm", perm);
    } else if (op == "squeeze" || op == "unsqueeze") {
      if (n.inputs.size() < 2) unsupported(n, "squeeze without a dimension");
      const std::int64_t d = normalized_dim(int_input(n, 1), op == "unsqueeze" ? rank + 1 : rank);
      axes(unary(n, op == "squeeze" ? "Squeeze" : "Unsqueeze"), "axes", {d}, n.name + ".axes");
    } else {  // contiguous, clone, dropout (inference): the identity
      unary(n, "Identity");
    }
  }

  // prim ops over tensors (lists, tuples): names only, no ONNX node.
  bool collection(const Node& n) {
    const bool of_tensors = std::any_of(n.inputs.begin(), n.inputs.end(), [&](int v) { return !list_[v].empty() || !name_[v].empty(); });
    if (!of_tensors) return false;
    if (n.op == "prim::ListConstruct" || n.op == "prim::TupleConstruct") {
      for (int v : n.inputs) list_[n.outputs[0]].push_back(tensor(v, n.name));
    } else if (n.op == "prim::ListUnpack" || n.op == "prim::TupleUnpack") {
      for (std::size_t k = 0; k < n.outputs.size(); ++k) name_[n.outputs[k]] = list_[n.inputs[0]].at(k);
    } else if (n.op == "aten::__getitem__" && !list_[n.inputs[0]].empty()) {
      const auto& items = list_[n.inputs[0]];
      const std::int64_t k = int_input(n, 1);
      name_[n.outputs[0]] = items.at(k < 0 ? k + static_cast<std::int64_t>(items.size()) : k);
    } else {
      return false;
    }
    return true;
  }

  // Integers from shapes (sizes, lists of them): known from the example runs, no ONNX node. Refused when
  // they would carry the batch size anywhere but into a list a reshape reads.
  bool static_values(const Node& n) const {
    const bool integers = std::all_of(n.outputs.begin(), n.outputs.end(), [&](int v) { return !a_[v].isTensor() && !a_[v].isTensorList(); });
    if (!integers) return false;
    for (int v : n.inputs)
      if (is_static(v) && !same_in_both_runs(v) && n.op != "prim::ListConstruct" && n.op != "prim::ListUnpack" &&
          n.op != "aten::__getitem__")
        unsupported(n, "computes with the batch size");
    return true;
  }

  void operator_node(const Node& n) {
    std::string op = n.op.substr(n.op.find("::") + 2);
    if (!op.empty() && op.back() == '_' && op != "__getitem__") op.pop_back();  // in-place: the same op here
    static const std::set<std::string> activations = {"relu", "relu6", "hardtanh", "sigmoid", "tanh", "leaky_relu",
                                                      "hardsigmoid", "hardswish", "silu", "gelu", "softmax", "log_softmax"};
    static const std::set<std::string> shapes = {"flatten", "view", "reshape", "transpose", "permute", "squeeze",
                                                 "unsqueeze", "contiguous", "clone", "dropout", "feature_dropout"};
    if (activations.count(op)) activation(n, op);
    else if (shapes.count(op)) shape_op(n, op);
    else if (op == "add") binary(n, "Add");
    else if (op == "sub") binary(n, "Sub");
    else if (op == "mul") binary(n, "Mul");
    else if (op == "div" && n.inputs.size() == 2) binary(n, "Div");
    else if (op == "cat") {
      std::vector<std::string> parts = list_[n.inputs[0]];
      if (parts.empty()) unsupported(n, "concatenates a list the writer did not build");
      attr(unary(n, "Concat", parts), "axis", normalized_dim(int_input(n, 1), a_[n.outputs[0]].toTensor().dim()));
    } else if (op == "chunk" || op == "split" || op == "split_with_sizes") split(n);
    else if (op == "max_pool2d") pool(n, true);
    else if (op == "avg_pool2d") pool(n, false);
    else if (op == "adaptive_avg_pool2d") adaptive_pool(n, false);
    else if (op == "adaptive_max_pool2d") adaptive_pool(n, true);
    else if (op == "mean" || op == "sum") reduce(n, op == "mean");
    else unsupported(n, "the ONNX writer does not support this operator");
  }

  void node(int index) {
    const Node& n = graph_.nodes[index];
    if (n.kind == OpKind::Conv || n.kind == OpKind::Linear) return layer(index);
    if (n.kind == OpKind::BatchNorm) return batch_norm(n);
    if (n.op == "prim::If") return;  // the model's own input check
    if (!collection(n) && !static_values(n)) operator_node(n);
    for (int v : n.outputs)
      if (!name_[v].empty()) quantize_activation(v);
  }

  const QuantizedModel& model_;
  const Graph& graph_;
  const std::vector<c10::IValue>& a_;
  const std::vector<c10::IValue>& b_;
  OnnxForm form_;
  int opset_;
  onnx::ModelProto proto_;
  onnx::GraphProto* g_ = nullptr;
  std::vector<std::string> name_;       // float tensor read by float ops
  std::vector<std::string> quantized_;  // the integer tensor of a quantized value
  std::map<int, std::pair<std::string, std::string>> params_;  // its scale and zero-point initializers
  std::vector<std::vector<std::string>> list_;  // lists and tuples of tensors
  std::vector<bool> skip_;
  std::vector<int> layer_of_;
  std::map<int, int> quantizer_;
  std::set<std::string> tensor_names_, node_names_;
  OnnxModel out_;
};

}  // namespace

OnnxModel write_onnx(const QuantizedModel& model, const std::vector<c10::IValue>& values_a,
                     const std::vector<c10::IValue>& values_b, OnnxForm form, const std::string& name) {
  return OnnxBuilder(model, values_a, values_b, form).build(name);
}

std::string with_outputs(const std::string& bytes, const std::vector<std::string>& names) {
  onnx::ModelProto m;
  if (!m.ParseFromString(bytes)) throw Error("ONNX export: cannot read back the model just written");
  for (const std::string& n : names) {
    onnx::ValueInfoProto* out = m.mutable_graph()->add_output();
    out->set_name(n);
    out->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  }
  return m.SerializeAsString();
}

int integer_kernels(const std::string& path) {
  static const std::set<std::string> kernels = {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm"};
  std::ifstream in(path, std::ios::binary);
  onnx::ModelProto m;
  if (!in || !m.ParseFromIstream(&in)) throw Error(path + ": not an ONNX model");
  int count = 0;
  for (const onnx::NodeProto& n : m.graph().node()) count += kernels.count(n.op_type()) > 0;
  return count;
}

}  // namespace xdq::exporting
