// bias_absorption (Nagel et al., ICCV 2019, section 4.1, high-bias absorption): for a pair
// W1 -> ReLU -> W2, the part c = max(0, beta - n|gamma|) of each channel's output that the ReLU almost
// surely passes unchanged (N(beta, gamma²) from the folded BN, n = 3) moves from layer 1's bias to
// layer 2's: b1 -= c, b2 += (sum over the kernel of W2)·c. Exact where the pre-activation stays above c
// (and, for a padded W2, away from the border); it shrinks activation ranges after CLE enlarged them.
// Runs on the folded graph (it folds BatchNorm first); pairs through other activations are logged.
#include <ostream>

#include "xdq/ir/dfq.h"
#include "xdq/ir/passes.h"
#include "xdq/plugin/interfaces.h"

namespace {

class BiasAbsorption : public xdq::GraphPass {
 public:
  explicit BiasAbsorption(double n) : n_(n) {}

  void run(xdq::Graph& graph, const xdq::PassContext& context) const override {
    xdq::fold_batch_norm(graph);
    int pairs = 0;
    std::int64_t channels = 0;
    for (const xdq::LayerPair& pair : xdq::layer_pairs(graph)) {
      xdq::Node& first = graph.nodes[pair.first];
      xdq::Node& second = graph.nodes[pair.second];
      const auto bounds = pair.activation >= 0 ? xdq::clip_bounds(graph, graph.nodes[pair.activation]) : std::nullopt;
      std::string problem;
      if (!bounds || bounds->first != 0 || std::isfinite(bounds->second)) problem = "not joined by a ReLU";
      else if (!first.folded_bn.gamma.defined()) problem = "no folded BatchNorm on " + first.name;
      if (!problem.empty()) {
        if (context.log)
          *context.log << "bias_absorption: skipped " << first.name << " -> " << second.name << ": " << problem << "\n";
        continue;
      }
      const at::Tensor c = at::clamp_min(first.folded_bn.beta - n_ * first.folded_bn.gamma.abs(), 0);
      first.bias = first.bias.defined() ? first.bias - c : -c;
      first.folded_bn.beta = first.folded_bn.beta - c;
      const at::Tensor shift = xdq::constant_input_response(second, second.weight, c);
      second.bias = second.bias.defined() ? second.bias + shift : shift;
      ++pairs;
      channels += (c > 0).sum().item<std::int64_t>();
    }
    if (context.log) *context.log << "bias_absorption: " << channels << " channels absorbed over " << pairs << " pairs\n";
  }

 private:
  double n_;
};

const xdq::Option<double> kN =
    xdq::OptionSpec::number("n", 3.0, "c = max(0, beta - n|gamma|): standard deviations kept below the bias").range(0, 100);
xdq::OptionSchema schema() { return {kN.spec()}; }
xdq::Plugin* create(const xdq::Options& o) { return new BiasAbsorption(kN(o)); }

}  // namespace

XDQ_PLUGIN(xdq::GraphPass, "bias_absorption", "1.0.0", "DFQ high-bias absorption into the next layer", schema, create)
