#pragma once
// The input normalization a model expects, part of the model (TorchScript attributes or the experiment's
// model entry): (x - mean) / std per channel, on [0, 1] images.
#include <utility>
#include <vector>

#include <ATen/ATen.h>

namespace xdq {

struct Preprocess {
  std::vector<double> mean{0.0};
  std::vector<double> std{1.0};
  at::Tensor apply(const at::Tensor& images) const;
  // The smallest and largest value a [0, 1] image with `channels` channels becomes.
  std::pair<double, double> value_range(std::int64_t channels) const;
};

}  // namespace xdq
