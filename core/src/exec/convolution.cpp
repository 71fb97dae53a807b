#include "xdq/exec/convolution.h"

#include "xdq/error.h"

namespace xdq {

ConvAlgorithm conv_algorithm(const std::string& name) {
  if (name == "direct") return ConvAlgorithm::Direct;
  if (name != "winograd") throw Error("convolution: expected direct or winograd, got '" + name + "'");
  if (!winograd_built())
    throw Error("convolution: winograd: this xdq was built without oneDNN's headers (libdnnl-dev), which Winograd "
                "convolutions need; install them and configure again, or use convolution: direct");
  return ConvAlgorithm::Winograd;
}

bool winograd_on_this_cpu() {
  ConvAttrs same;
  same.padding = {1, 1};
  return winograd_applies(at::zeros({1, 16, 8, 8}), at::zeros({16, 16, 3, 3}), same);
}

at::Tensor convolve(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const ConvAttrs& attrs,
                    ConvAlgorithm algorithm) {
  if (algorithm == ConvAlgorithm::Winograd && winograd_applies(x, w, attrs)) return winograd_conv2d(x, w, bias, attrs);
  return at::conv2d(x, w, bias, attrs.stride, attrs.padding, attrs.dilation, attrs.groups);
}

}  // namespace xdq
