#pragma once
// Graph rewrites and structure queries shared by the core and plugins.
#include <string>
#include <utility>
#include <vector>

#include "xdq/ir/graph.h"

namespace xdq {

// (conv node, batch_norm node) pairs where the BN reads only that conv's output.
std::vector<std::pair<int, int>> conv_bn_pairs(const Graph& graph);

// Folds every conv-BN pair: W' = W * gamma / sqrt(var + eps) per output channel,
// b' = (b - mean) * gamma / sqrt(var + eps) + beta. The BN's statistics stay on the conv (folded_bn).
// Returns the number of folded pairs.
int fold_batch_norm(Graph& graph);

// A residual unit ending in an add (BasicBlock, Bottleneck, inverted residual) or, with include_concat, a
// unit whose branches are concatenated (ShuffleNetV2, Inception): the nodes between the value where the
// branches fork and the merge, plus a lone activation right after the merge.
struct ResidualBlock {
  std::string name;          // common module prefix of its layers ("layer1.block0")
  int input_value = -1;      // the fork
  int output_value = -1;
  std::vector<int> nodes;    // in graph order
  std::vector<int> layers;   // conv/linear nodes among them
};
std::vector<ResidualBlock> find_residual_blocks(const Graph& graph, bool include_concat = false);

// Nodes merging tensors from several branches: add/sub/mul of two tensors, cat; not a trace's shape
// arithmetic (sizes turned into tensors and multiplied).
std::vector<int> merge_nodes(const Graph& graph);

// True where the node's output is never negative (ReLU family, sigmoid-like, hardtanh clipped at a
// non-negative minimum such as ReLU6 written as hardtanh(0, 6)): such values get unsigned ranges.
bool output_is_nonnegative(const Graph& graph, const Node& node);
bool is_activation_op(const Node& node);

}  // namespace xdq
