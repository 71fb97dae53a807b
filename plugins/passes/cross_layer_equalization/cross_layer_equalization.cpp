// cross_layer_equalization (Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias
// Correction", ICCV 2019, section 4.1): for each pair W1 -> ReLU -> W2 (conv-conv, and conv-depthwise-conv
// as two overlapping pairs) output channel i of W1 is divided by s_i = sqrt(r1_i / r2_i) and input channel
// i of W2 multiplied by it (r1: range of W1's output channel, r2: range of W2's input channel), which
// leaves the FP function unchanged through a positively homogeneous activation and evens out per-tensor
// weight ranges. Sweeps repeat until no scale moves by more than `tolerance`. Runs on the folded graph
// (it folds BatchNorm first) and rescales the folded BN statistics with the layer.
// ReLU6 is not homogeneous: such pairs are skipped and logged, or with relu6: replace the ReLU6 becomes
// a ReLU first, as the paper does for MobileNetV2 (which changes the FP model; the log says so).
#include <ostream>

#include "xdq/error.h"
#include "xdq/ir/dfq.h"
#include "xdq/ir/passes.h"
#include "xdq/plugin/interfaces.h"

namespace {

using xdq::Node;

// Per channel: max |W| over every axis but `axis`.
at::Tensor channel_range(const at::Tensor& w, std::int64_t axis) {
  return w.abs().transpose(0, axis).reshape({w.size(axis), -1}).amax(1);
}

// View of a per-channel vector broadcasting along `axis` of a weight of `dim` dims.
at::Tensor along(const at::Tensor& v, std::int64_t axis, std::int64_t dim) {
  std::vector<std::int64_t> shape(dim, 1);
  shape[axis] = -1;
  return v.view(shape);
}

class CrossLayerEqualization : public xdq::GraphPass {
 public:
  CrossLayerEqualization(bool replace_relu6, std::int64_t sweeps, double tolerance)
      : replace_relu6_(replace_relu6), sweeps_(sweeps), tolerance_(tolerance) {}

  void run(xdq::Graph& graph, const xdq::PassContext& context) const override {
    xdq::fold_batch_norm(graph);
    std::vector<xdq::LayerPair> usable;
    int replaced = 0;
    for (const xdq::LayerPair& pair : xdq::layer_pairs(graph)) {
      const auto bounds = pair.activation >= 0 ? xdq::clip_bounds(graph, graph.nodes[pair.activation]) : std::nullopt;
      if (!pair.problem.empty() && replace_relu6_ && bounds && bounds->first == 0 && bounds->second == 6) {
        Node& act = graph.nodes[pair.activation];
        act.op = "aten::relu";
        act.inputs.resize(1);
        act.run = [](std::vector<c10::IValue>& stack) {
          const at::Tensor x = stack.at(0).toTensor();
          stack.clear();
          stack.emplace_back(at::relu(x));
        };
        ++replaced;
      } else if (!pair.problem.empty()) {
        if (context.log)
          *context.log << "cross_layer_equalization: skipped " << graph.nodes[pair.first].name << " -> "
                       << graph.nodes[pair.second].name << ": " << pair.problem << "\n";
        continue;
      }
      usable.push_back(pair);
    }
    if (replaced && context.log)
      *context.log << "cross_layer_equalization: replaced " << replaced
                   << " ReLU6 by ReLU (relu6: replace; the FP model changes)\n";
    double moved = 0;
    std::int64_t sweep = 0;
    for (; sweep < sweeps_; ++sweep) {
      moved = 0;
      for (const xdq::LayerPair& pair : usable) moved = std::max(moved, equalize(graph.nodes[pair.first], graph.nodes[pair.second]));
      if (moved < tolerance_) break;
    }
    if (context.log)
      *context.log << "cross_layer_equalization: " << usable.size() << " pairs, " << sweep + (sweep < sweeps_ ? 1 : 0)
                   << " sweeps, last largest scale change " << moved << "\n";
  }

 private:
  // One equalization of a pair; returns max |s - 1|.
  static double equalize(Node& first, Node& second) {
    const at::Tensor r1 = channel_range(first.weight, 0);
    const at::Tensor r2 = second.is_depthwise() ? channel_range(second.weight, 0) : channel_range(second.weight, 1);
    at::Tensor s = at::sqrt(r1 / r2);
    s = at::where((r1 > 0) & (r2 > 0), s, at::ones_like(s));
    first.weight = first.weight / along(s, 0, first.weight.dim());
    if (first.bias.defined()) first.bias = first.bias / s;
    if (first.folded_bn.gamma.defined()) {
      first.folded_bn.gamma = first.folded_bn.gamma / s;
      first.folded_bn.beta = first.folded_bn.beta / s;
    }
    second.weight = second.weight * along(s, second.is_depthwise() ? 0 : 1, second.weight.dim());
    return (s - 1).abs().max().item<double>();
  }

  bool replace_relu6_;
  std::int64_t sweeps_;
  double tolerance_;
};

const xdq::Option<std::string> kRelu6 =
    xdq::OptionSpec::text("relu6", "skip", "pairs through ReLU6: skip (logged) or replace it by ReLU (DFQ's choice)")
        .one_of({"skip", "replace"});
const xdq::Option<std::int64_t> kSweeps =
    xdq::OptionSpec::integer("sweeps", 100, "most sweeps over all pairs").range(1, 1e6);
const xdq::Option<double> kTolerance =
    xdq::OptionSpec::number("tolerance", 1e-6, "stop once no scale changes by more than this").range(0, 1);
xdq::OptionSchema schema() { return {kRelu6.spec(), kSweeps.spec(), kTolerance.spec()}; }
xdq::Plugin* create(const xdq::Options& o) {
  return new CrossLayerEqualization(kRelu6(o) == "replace", kSweeps(o), kTolerance(o));
}

}  // namespace

XDQ_PLUGIN(xdq::GraphPass, "cross_layer_equalization", "1.0.0", "DFQ cross-layer equalization of conv pairs", schema,
           create)
