#pragma once
// GraphRun: how a plugin runs a graph on images (graph passes measure activations this way). The engine
// (exec/executor.h) stays behind a pointer, so its layout is no part of a plugin's ABI: a plugin never
// constructs it, and the engine may change without rebuilding plugins.
#include <memory>
#include <vector>

#include <ATen/ATen.h>

#include "xdq/ir/graph.h"
#include "xdq/quant/quantizer.h"

namespace xdq {

class Executor;

class GraphRun {
 public:
  explicit GraphRun(const Graph& graph);  // runs a copy of the graph as it is now
  GraphRun(GraphRun&&) noexcept;
  GraphRun& operator=(GraphRun&&) noexcept;
  ~GraphRun();

  // A quantized model: layer `node` computes with `weight`; value `value` is fake-quantized with `q`.
  void set_weight(int node, const at::Tensor& weight);
  void fake_quantize(int value, const QParams& q);

  // The graph's output on `images` (moved to the graph's device), without autograd.
  at::Tensor forward(const at::Tensor& images) const;
  // The `values` computed by nodes [0, upto) on `images`, in order, without autograd.
  std::vector<at::Tensor> values(const at::Tensor& images, const std::vector<int>& values, int upto) const;

 private:
  std::unique_ptr<Executor> engine_;
};

}  // namespace xdq
