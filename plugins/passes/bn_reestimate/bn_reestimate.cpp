// bn_reestimate (AdaBN; Li et al., "Revisiting Batch Normalization for Practical Domain Adaptation", 2016):
// re-estimates every BatchNorm's running statistics on unlabeled target-domain data before quantization.
// As PyTorch's train-mode forward with momentum=None: every BN normalizes each batch with that batch's
// statistics (so later layers see adapted features), and its new running mean / variance are the
// averages over batches of the batch mean / unbiased batch variance.
#include <memory>

#include "xdq/error.h"
#include "xdq/plugin/graph_run.h"
#include "xdq/plugin/interfaces.h"

namespace {

struct Accumulator {
  at::Tensor mean_sum, var_sum;
  int batches = 0;
};

class BnReestimate : public xdq::GraphPass {
 public:
  explicit BnReestimate(std::int64_t batch_size) : batch_size_(batch_size) {}

  void run(xdq::Graph& graph, const xdq::PassContext& context) const override {
    if (context.calibration.empty())
      throw xdq::Error("bn_reestimate needs target-domain images (it is not data-free)");
    xdq::Graph adapting = graph;
    std::vector<std::pair<int, std::shared_ptr<Accumulator>>> accumulators;
    for (std::size_t i = 0; i < adapting.nodes.size(); ++i) {
      xdq::Node& node = adapting.nodes[i];
      if (node.kind != xdq::OpKind::BatchNorm) continue;
      auto acc = std::make_shared<Accumulator>();
      accumulators.emplace_back(static_cast<int>(i), acc);
      const xdq::BatchNormStats bn = node.bn;
      node.kind = xdq::OpKind::Generic;
      node.run = [acc, bn](std::vector<c10::IValue>& stack) {
        const at::Tensor x = stack.at(0).toTensor();
        const at::Tensor mean = x.mean({0, 2, 3});
        const at::Tensor var = x.var({0, 2, 3}, /*unbiased=*/false);
        const auto n = x.numel() / x.size(1);
        const at::Tensor unbiased = n > 1 ? var * (static_cast<double>(n) / static_cast<double>(n - 1)) : var;
        acc->mean_sum = acc->batches ? acc->mean_sum + mean : mean;
        acc->var_sum = acc->batches ? acc->var_sum + unbiased : unbiased;
        ++acc->batches;
        const auto shape = std::vector<std::int64_t>{1, -1, 1, 1};
        stack = {(x - mean.view(shape)) * at::rsqrt(var.view(shape) + bn.eps) * bn.gamma.view(shape) + bn.beta.view(shape)};
      };
    }
    if (accumulators.empty()) return;
    const xdq::GraphRun run(adapting);
    context.calibration.for_each_batch(batch_size_, [&](const at::Tensor& images, std::int64_t) { run.forward(images); });
    for (const auto& [index, acc] : accumulators) {
      graph.nodes[index].bn.mean = acc->mean_sum / acc->batches;
      graph.nodes[index].bn.var = acc->var_sum / acc->batches;
    }
  }

 private:
  std::int64_t batch_size_;
};

const xdq::Option<std::int64_t> kBatchSize =
    xdq::OptionSpec::integer("batch_size", 64, "images per batch (each batch normalized by its own statistics)")
        .range(2, 1 << 16);
xdq::OptionSchema schema() { return {kBatchSize.spec()}; }
xdq::Plugin* create(const xdq::Options& o) { return new BnReestimate(kBatchSize(o)); }

}  // namespace

XDQ_PLUGIN(xdq::GraphPass, "bn_reestimate", "1.0.0", "AdaBN: BatchNorm statistics re-estimated on target-domain data",
           schema, create)
