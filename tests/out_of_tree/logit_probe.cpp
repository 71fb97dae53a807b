// Out-of-tree test graph pass, written from docs/plugins.md: before quantization it runs the FP graph on
// the calibration images through the SDK's GraphRun and reports what came out; the graph is unchanged.
#include <ostream>

#include "xdq/error.h"
#include "xdq/plugin/graph_run.h"
#include "xdq/plugin/interfaces.h"

namespace {
class LogitProbe : public xdq::GraphPass {
 public:
  void run(xdq::Graph& graph, const xdq::PassContext& context) const override {
    if (!context.calibration.defined()) throw xdq::Error("oot_logit_probe needs calibration images");
    const at::Tensor logits = xdq::GraphRun(graph).forward(context.calibration);
    const std::int64_t agreeing = logits.argmax(1).eq(logits.argmax(1)[0]).sum().item<std::int64_t>();
    if (context.log)
      *context.log << "oot_logit_probe: " << logits.size(0) << " images -> " << logits.size(1) << " logits, "
                   << agreeing << " share the first image's class" << std::endl;
  }
};
xdq::OptionSchema schema() { return {}; }
xdq::Plugin* create(const xdq::Options&) { return new LogitProbe(); }
}  // namespace

XDQ_PLUGIN(xdq::GraphPass, "oot_logit_probe", "0.1.0", "out-of-tree test pass: the model run through GraphRun",
           schema, create)
