// Built without oneDNN's headers (libdnnl-dev): every convolution stays direct.
#include "xdq/error.h"
#include "xdq/exec/convolution.h"

namespace xdq {

bool winograd_built() { return false; }

bool winograd_applies(const at::Tensor&, const at::Tensor&, const ConvAttrs&, const ConvEpilogue&, const WinogradBlocking&) {
  return false;
}

at::Tensor winograd_conv2d(const at::Tensor&, const at::Tensor&, const at::Tensor&, const ConvAttrs&) {
  throw Error("winograd_conv2d: this xdq was built without oneDNN's headers (install libdnnl-dev and reconfigure)");
}

at::Tensor winograd_conv2d_fused(const at::Tensor&, const at::Tensor&, const at::Tensor&, const ConvAttrs&,
                                 const ConvEpilogue&, const WinogradBlocking&) {
  throw Error("winograd_conv2d_fused: this xdq was built without oneDNN's headers (install libdnnl-dev and reconfigure)");
}

at::Tensor from_blocked(const at::Tensor&) {
  throw Error("from_blocked: this xdq was built without oneDNN's headers (install libdnnl-dev and reconfigure)");
}

}  // namespace xdq
