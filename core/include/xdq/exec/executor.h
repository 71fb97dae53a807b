#pragma once
// Runs a Graph with ATen ops. Stays differentiable: autograd flows to the inputs and to any weight
// installed with set_weight (AdaRound-style optimizers install a function of their parameters).
// Hooks see or replace any value as it is produced: calibration observes, quantization fake-quantizes.
#include <functional>
#include <vector>

#include "xdq/ir/graph.h"

namespace xdq {

class Executor {
 public:
  using ValueHook = std::function<at::Tensor(const at::Tensor&)>;

  explicit Executor(Graph graph);

  const Graph& graph() const { return graph_; }

  // The hook's result replaces the value for every reader. One hook per value; null clears it.
  void set_value_hook(int value, ValueHook hook);
  void clear_value_hooks();
  // Replaces a conv/linear node's weight in the computation (the graph keeps the original).
  void set_weight(int node, at::Tensor weight);
  void clear_weights();

  std::vector<c10::IValue> run(const std::vector<c10::IValue>& inputs) const;
  // One tensor in, first output out.
  at::Tensor forward(const at::Tensor& input) const;

 private:
  Graph graph_;
  std::vector<ValueHook> hooks_;
  std::vector<at::Tensor> weights_;
  std::vector<int> last_use_;  // node index after which a value is dead (frees memory early)
};

}  // namespace xdq
