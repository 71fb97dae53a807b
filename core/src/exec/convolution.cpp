#include "xdq/exec/convolution.h"

namespace xdq {

at::Tensor convolve(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const ConvAttrs& attrs,
                    ConvAlgorithm algorithm) {
  if (algorithm == ConvAlgorithm::Winograd && winograd_applies(x, w, attrs)) return winograd_conv2d(x, w, bias, attrs);
  return at::conv2d(x, w, bias, attrs.stride, attrs.padding, attrs.dilation, attrs.groups);
}

}  // namespace xdq
