#pragma once
// Structure and statistics that data-free quantization (DFQ, Nagel et al., ICCV 2019) works from, on a
// BN-folded graph whose conv/linear nodes keep their folded BatchNorm (folded_bn): gamma and beta there
// describe the layer's output per channel as N(beta, gamma²) (passes that rescale a layer rescale them).
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "xdq/ir/graph.h"

namespace xdq {

// The output interval of an elementwise clipping activation: relu [0, inf), relu6 [0, 6], hardtanh with
// constant bounds [min, max]; nullopt for any other op.
std::optional<std::pair<double, double>> clip_bounds(const Graph& graph, const Node& node);

// Two layers joined directly or through one elementwise activation, the first's output read by nothing
// else: cross-layer equalization and high-bias absorption work on these. `second` is a conv reading all
// of first's channels, a depthwise conv (one channel each), or a linear after a linear.
struct LayerPair {
  int first = -1, activation = -1, second = -1;  // node indices (activation -1: none)
  // Why the pair cannot be rescaled ("" when it can): the activation is not positively homogeneous.
  std::string problem;
};
std::vector<LayerPair> layer_pairs(const Graph& graph);

// The output shift of a conv/linear layer with weights `weight` (its own, or a difference of weights) when
// every position of input channel i carries the constant v_i: (sum over the kernel of weight) · v, per
// output channel; depthwise convs pair channel i with output i. Padding borders are ignored.
at::Tensor constant_input_response(const Node& layer, const at::Tensor& weight, const at::Tensor& v);

// Per-channel mean and standard deviation of a value, predicted from BN statistics alone: a folded layer's
// output is N(beta, gamma²); clipping activations take the clipped-normal moments; add sums means and
// variances (branches taken as independent); pooling, flatten, view and dropout keep them; cat
// concatenates them. nullopt, with `why` naming the node, when the value is out of reach (the model input,
// a layer without BN, any other op).
struct ChannelMoments {
  at::Tensor mean, std;  // [C], double
};
std::optional<ChannelMoments> channel_moments(const Graph& graph, int value, std::string* why = nullptr);

// Moments of clamp(X, lo, hi) for X ~ N(mean, std²) per channel, by quadrature on a fine grid over
// ±10 std (std = 0 gives the clamped point mass).
ChannelMoments clipped_normal_moments(const at::Tensor& mean, const at::Tensor& std, double lo, double hi);

}  // namespace xdq
