#pragma once
// Runs a Graph with ATen ops. Stays differentiable: autograd flows to the inputs and to any weight
// installed with set_weight (AdaRound-style optimizers install a function of their parameters).
// Hooks see or replace any value as it is produced: calibration observes, quantization fake-quantizes.
// It runs where the graph's tensors are (Graph::to): tensors given to it are moved there (from pinned
// memory when the graph is on a GPU), and what it returns stays there.
#include <atomic>
#include <functional>
#include <memory>
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
  // A hook that maps each element by itself and keeps its input's shape and memory layout (per-tensor fake
  // quantization): evaluation may apply it to a value held in a blocked layout (below).
  void set_elementwise_hook(int value, ValueHook hook);
  void clear_value_hooks();
  // Replaces a conv/linear node's weight in the computation (the graph keeps the original).
  void set_weight(int node, at::Tensor weight);
  void clear_weights();
  // With graph().channels_last, convolutions run in channels-last (NHWC) memory: conv weights converted
  // once (and any set later), 4-D inputs on entry; the ops after a conv keep its layout, and results equal
  // the default layout's within float32 rounding.

  // With graph().convolution Winograd, evaluation without autograd runs the add and ReLU after a conv node
  // inside its convolution where no hook or capture needs the values in between (xdq/exec/convolution.h:
  // the same values, fewer passes over memory). How many conv nodes have such an epilogue planned (each
  // runs fused where its shape has the kernels).
  int fused_epilogues() const;
  // Such an evaluation also keeps a fused convolution's output in oneDNN's blocked layout when only fused
  // Winograd convolutions read it (as input or residual) and no hook but an elementwise one, capture or
  // graph output sees it; a reader that turns out unable to take it gets it as a 4-d tensor. How many
  // values are planned so.
  int blocked_values() const;

  // Evaluation (no autograd, CPU, no hook but elementwise ones) of a large batch of images (4-d) runs the
  // graph's leading per-sample nodes (convolutions, BatchNorm, pointwise ops, pooling;
  // `per_sample_prefix()` of them) in sub-batches sized to the last-level cache (evaluation_sub_batch,
  // below) and the rest (from the first linear, whose GEMM rounds by the number of rows) on the whole
  // batch: the same bits, since each op of the prefix computes a sample alone, with less memory traffic.
  // The first call runs whole and measures its largest activation against its input's size; later calls
  // size their sub-batches by that ratio (each whole run measures it again).
  std::vector<c10::IValue> run(const std::vector<c10::IValue>& inputs) const;
  int per_sample_prefix() const { return per_sample_prefix_; }
  // One tensor in, first output out.
  at::Tensor forward(const at::Tensor& input) const;

  // Runs only nodes [first, last): `given` holds every value they read that is produced outside the range
  // (hooks on given values are applied, as if produced here). Returns the `wanted` values as produced
  // (after their hooks), in order. Reconstruction runs one block this way; a prefix [0, k) captures the
  // inputs of node k.
  std::vector<at::Tensor> run_nodes(int first, int last, const std::vector<std::pair<int, at::Tensor>>& given,
                                    const std::vector<int>& wanted) const;
  // Values read by nodes [first, last) that none of them produces (graph inputs and earlier nodes'
  // outputs; constants excluded), in order of first use.
  std::vector<int> range_inputs(int first, int last) const;
  // Every value (constants included) of one run of the graph on `example`, hooks applied.
  std::vector<c10::IValue> all_values(const at::Tensor& example) const;
  // Which values hold tensors (the rest are lists, ints, ...), found by running the graph once on `example`.
  std::vector<bool> tensor_values(const at::Tensor& example) const;
  // `first` moved back until nodes [first, last) read only tensors from outside: a range cannot start
  // between a chunk and its items, or between x.size(0) and the view that uses it.
  int tensor_inputs_start(int first, int last, const std::vector<bool>& is_tensor) const;

 private:
  // Runs nodes [first, last) over `values`; each value in `wanted` is copied out when produced, and every
  // produced value into `all` when given.
  // `largest`, when given, is raised to the largest tensor produced (bytes).
  void execute(int first, int last, std::vector<c10::IValue>& values, const std::vector<int>& wanted,
               std::vector<at::Tensor>& captured, std::vector<c10::IValue>* all = nullptr,
               std::int64_t* largest = nullptr) const;
  void plan_per_sample_prefix();
  // The sub-batch `input` is evaluated in (0: whole).
  std::int64_t sub_batch(const at::Tensor& input) const;
  std::vector<c10::IValue> run_in_sub_batches(const at::Tensor& input, std::int64_t size) const;

  // The ops after a conv node that a Winograd convolution runs inside its kernel (an add of a residual
  // produced earlier, a ReLU; xdq/exec/convolution.h) when nothing reads the values in between. Planned
  // from the graph; used only without autograd and without hooks or captures on those values.
  struct Epilogue {
    int add = -1, relu = -1;        // the fused nodes (-1: none)
    int residual = -1, alpha = -1;  // the add's other operand and its alpha input
    std::vector<int> skipped;       // values never produced when fused: the conv's output, the add's before ReLU
    int output = -1;                // the value the fused convolution produces
  };
  void plan_epilogues();
  void plan_blocked_values();
  // Whether the fused add of conv node `conv` may write into its residual's memory in this pass (nodes
  // from `first`; `values` as they are when it runs).
  bool residual_buffer_free(int residual, int conv, int first, const std::vector<c10::IValue>& values,
                            const std::vector<int>& wanted) const;
  // Whether node i runs with its epilogue in this pass (`values` as they are when it runs, those held
  // blocked marked in `blocked`).
  bool fuses_epilogue(int i, int last, const std::vector<c10::IValue>& values, const std::vector<char>& blocked,
                      const std::vector<int>& wanted, const std::vector<c10::IValue>* all) const;

  Graph graph_;
  c10::Device device_;
  std::vector<ValueHook> hooks_;
  std::vector<char> elementwise_;  // per value: its hook is elementwise
  std::vector<at::Tensor> weights_;
  std::vector<int> last_use_;  // node index after which a value is dead (frees memory early)
  std::vector<Epilogue> epilogues_;  // per node
  std::vector<char> blockable_;      // per value: planned to stay blocked
  int per_sample_prefix_ = 0;
  std::vector<int> prefix_results_;  // values made in the prefix and read after it (or graph outputs)
  // Largest activation over input size of the last whole evaluation (0: none yet); shared by copies,
  // which run the same graph.
  std::shared_ptr<std::atomic<double>> activation_ratio_ = std::make_shared<std::atomic<double>>(0.0);
};

// The sub-batch for evaluating `batch` samples whose largest activation takes `bytes_per_sample` each, with
// `cache_bytes` of last-level cache: the largest power of two up to 64 whose activation fits half of it.
// Measured on 2 cores (32 MiB), the zoo's models at 28x28, batches of 256 against sub-batches: ResNet-20
// (50 KB per image) evaluates fastest in 64 (FP32 and W4A4 +18 %, 128 and 32 in between), MobileNetV2
// (294 KB) in 32-64 (+52-63 %), VGG in 64-128 (+7-17 %). 0 (the whole batch) when the batch is no larger
// or the size under 32: sub-batches are made equal, so none falls under 16, the size from which ATen
// convolves with oneDNN at any thread count (the same bits).
constexpr std::int64_t kMinSubBatch = 32, kMaxSubBatch = 64;
std::int64_t evaluation_sub_batch(std::int64_t batch, std::int64_t bytes_per_sample, std::int64_t cache_bytes);
// This machine's last-level cache (bytes; 0 when the system does not say).
std::int64_t last_level_cache_bytes();

}  // namespace xdq
