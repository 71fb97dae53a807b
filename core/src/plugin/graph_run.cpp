#include "xdq/plugin/graph_run.h"

#include <ATen/core/grad_mode.h>

#include "xdq/exec/executor.h"

namespace xdq {

GraphRun::GraphRun(const Graph& graph) : engine_(std::make_unique<Executor>(graph)) {}
GraphRun::GraphRun(GraphRun&&) noexcept = default;
GraphRun& GraphRun::operator=(GraphRun&&) noexcept = default;
GraphRun::~GraphRun() = default;

void GraphRun::set_weight(int node, const at::Tensor& weight) { engine_->set_weight(node, weight); }

void GraphRun::fake_quantize(int value, const QParams& q) { set_fake_quantizer(*engine_, value, q); }

at::Tensor GraphRun::forward(const at::Tensor& images) const {
  const at::NoGradGuard no_grad;
  return engine_->forward(images);
}

std::vector<at::Tensor> GraphRun::values(const at::Tensor& images, const std::vector<int>& values, int upto) const {
  const at::NoGradGuard no_grad;
  return engine_->run_nodes(0, upto, {{engine_->graph().inputs.at(0), images}}, values);
}

}  // namespace xdq
