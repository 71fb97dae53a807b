#include "xdq/ir/preprocess.h"

#include <string>

#include "xdq/error.h"

namespace xdq {

at::Tensor Preprocess::apply(const at::Tensor& images) const {
  const std::int64_t channels = images.size(1);
  auto expand = [&](const std::vector<double>& v, const char* what) {
    if (v.size() != 1 && static_cast<std::int64_t>(v.size()) != channels)
      throw Error(std::string("preprocess ") + what + ": " + std::to_string(v.size()) + " values for " +
                  std::to_string(channels) + " channels");
    std::vector<float> f(channels);
    for (std::int64_t c = 0; c < channels; ++c) f[c] = static_cast<float>(v.size() == 1 ? v[0] : v[c]);
    return at::tensor(f).view({1, channels, 1, 1});
  };
  return (images - expand(mean, "mean")) / expand(std, "std");
}

std::pair<double, double> Preprocess::value_range(std::int64_t channels) const {
  const at::Tensor ends = apply(at::stack({at::zeros({channels, 1, 1}), at::ones({channels, 1, 1})}));
  return {ends.min().item<double>(), ends.max().item<double>()};
}

}  // namespace xdq
