#include "xdq/ir/describe.h"

#include <iomanip>
#include <sstream>

#include "xdq/ir/passes.h"

namespace xdq {

namespace {
std::string shape(const at::Tensor& t) {
  std::ostringstream out;
  out << "[";
  for (int64_t d = 0; d < t.dim(); ++d) out << (d ? "x" : "") << t.size(d);
  out << "]";
  return out.str();
}
}  // namespace

std::string describe_model(const ImportedModel& model) {
  const Graph& g = model.graph;
  std::ostringstream out;
  out << "model " << model.path << "\n";
  out << "  nodes " << g.nodes.size() << ", inputs " << g.inputs.size() << ", outputs " << g.outputs.size()
      << ", parameters " << g.parameter_count() << "\n";
  if (model.has_preprocess) {
    out << "  input normalization: mean";
    for (double m : model.preprocess.mean) out << " " << m;
    out << ", std";
    for (double s : model.preprocess.std) out << " " << s;
    out << "\n";
  }
  out << "\nlayers (" << g.layer_nodes().size() << ")\n";
  for (int i : g.layer_nodes()) {
    const Node& n = g.nodes[i];
    out << "  " << std::left << std::setw(32) << n.name << " " << std::setw(8) << n.op << std::setw(16) << shape(n.weight);
    if (n.kind == OpKind::Conv) {
      out << "stride " << n.conv.stride[0] << " groups " << n.conv.groups << (n.is_depthwise() ? " (depthwise)" : "");
    }
    out << "  params " << n.weight.numel() + (n.bias.defined() ? n.bias.numel() : 0) << "\n";
  }
  const auto pairs = conv_bn_pairs(g);
  out << "\nconv-bn pairs (" << pairs.size() << ")\n";
  for (const auto& [c, b] : pairs) out << "  " << g.nodes[c].name << " -> " << g.nodes[b].name << "\n";
  int lone_bn = 0;
  for (const auto& n : g.nodes) lone_bn += n.kind == OpKind::BatchNorm;
  lone_bn -= static_cast<int>(pairs.size());
  if (lone_bn > 0) out << "  (" << lone_bn << " batch_norm not after a conv: kept, not foldable)\n";
  const auto blocks = find_residual_blocks(g);
  out << "\nresidual blocks (" << blocks.size() << ")\n";
  for (const auto& b : blocks) {
    out << "  " << std::left << std::setw(24) << b.name << " layers:";
    for (int l : b.layers) out << " " << g.nodes[l].name;
    out << "\n";
  }
  const auto merges = merge_nodes(g);
  int cats = 0;
  for (int m : merges) cats += g.nodes[m].op.find("cat") != std::string::npos;
  out << "\nmerges: " << merges.size() - cats << " add/mul, " << cats << " concat\n";
  return out.str();
}

}  // namespace xdq
