// Out-of-tree test graph pass, written from docs/plugins.md: before quantization it runs the FP graph on
// the calibration images, batch by batch, through the SDK's GraphRun and reports what came out; the graph
// is unchanged.
#include <ostream>

#include "xdq/error.h"
#include "xdq/plugin/graph_run.h"
#include "xdq/plugin/interfaces.h"

namespace {
class LogitProbe : public xdq::GraphPass {
 public:
  void run(xdq::Graph& graph, const xdq::PassContext& context) const override {
    if (context.calibration.empty()) throw xdq::Error("oot_logit_probe needs calibration images");
    const xdq::GraphRun model(graph);
    std::int64_t images = 0, classes = 0;
    context.calibration.for_each_batch(64, [&](const at::Tensor& batch, std::int64_t) {  // preprocessed
      const at::Tensor logits = model.forward(batch);
      images += logits.size(0);
      classes = logits.size(1);
    });
    if (context.log) *context.log << "oot_logit_probe: " << images << " images -> " << classes << " logits" << std::endl;
  }
};
xdq::OptionSchema schema() { return {}; }
xdq::Plugin* create(const xdq::Options&) { return new LogitProbe(); }
}  // namespace

XDQ_PLUGIN(xdq::GraphPass, "oot_logit_probe", "0.1.0", "out-of-tree test pass: the model run through GraphRun",
           schema, create)
