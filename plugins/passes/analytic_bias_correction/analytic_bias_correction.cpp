// analytic_bias_correction (Nagel et al., ICCV 2019, section 4.2, data-free): the rounded weights W~
// shift each output's mean by eps·E[x], eps = W~ - W summed over the kernel; E[x] per input channel comes
// from the BN statistics of the layers before (N(beta, gamma²), through ReLU / ReLU6 as clipped-normal
// means, through adds and pooling; see xdq/ir/dfq.h). The shift is subtracted from the bias. Layers whose
// input cannot be predicted (the model input, a layer without BN, an unsupported op) are logged and left.
#include <ostream>

#include "xdq/error.h"
#include "xdq/ir/dfq.h"
#include "xdq/plugin/interfaces.h"

namespace {

class AnalyticBiasCorrection : public xdq::GraphPass {
 public:
  xdq::PassStage stage() const override { return xdq::PassStage::AfterRounding; }

  void run(xdq::Graph& graph, const xdq::PassContext& context) const override {
    if (!context.layers) throw xdq::Error("analytic_bias_correction runs on a quantized model (after rounding)");
    int corrected = 0;
    for (const xdq::QuantizedLayer& layer : *context.layers) {
      xdq::Node& node = graph.nodes[layer.node];
      std::string why;
      const auto moments = xdq::channel_moments(graph, node.inputs[0], &why);
      if (!moments || (node.kind == xdq::OpKind::Conv && node.conv.groups != 1 && !node.is_depthwise())) {
        if (context.log)
          *context.log << "analytic_bias_correction: skipped " << node.name << ": "
                       << (moments ? "grouped convolution" : why) << "\n";
        continue;
      }
      const at::Tensor expected = moments->mean.to(at::kFloat);
      const at::Tensor eps = layer.quantized_weight - node.weight;
      const at::Tensor shift = xdq::constant_input_response(node, eps, expected);
      node.bias = node.bias.defined() ? node.bias - shift : -shift;
      ++corrected;
    }
    if (context.log)
      *context.log << "analytic_bias_correction: corrected " << corrected << " of " << context.layers->size() << " layers\n";
  }
};

xdq::OptionSchema schema() { return {}; }
xdq::Plugin* create(const xdq::Options&) { return new AnalyticBiasCorrection(); }

}  // namespace

XDQ_PLUGIN(xdq::GraphPass, "analytic_bias_correction", "1.0.0", "DFQ bias correction from BN statistics (no data)",
           schema, create)
