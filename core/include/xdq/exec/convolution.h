#pragma once
// The convolution of conv nodes. Direct: ATen's conv2d (oneDNN's direct kernels on the CPU). Winograd:
// oneDNN's Winograd F(4x4, 3x3) kernels, which transform 6x6 input tiles so that one 4x4 output tile
// costs 36 multiplications per channel pair instead of 144; measured on 2 AVX-512 cores 1.2-2.8x faster
// per pass than direct (forward, gradient to the input, gradient to the weights), with float32 error a
// few times the direct kernel's (transforms add and subtract terms before the products). oneDNN offers
// them on x86-64 CPUs with AVX-512 for float32 3x3 convolutions of stride 1, dilation 1, one group,
// padding 0 or 1 and channel counts multiple of 16; elsewhere the convolution stays direct.
#include <string>

#include <ATen/ATen.h>

#include "xdq/ir/graph.h"

namespace xdq {

// Whether this build links oneDNN's API (libdnnl-dev at configure time).
bool winograd_built();

// The algorithm named `name` (the experiment key `convolution`: "direct" or "winograd"); throws naming
// what is wrong: another name, or winograd in a build without oneDNN's headers.
ConvAlgorithm conv_algorithm(const std::string& name);

// Whether this CPU has oneDNN's Winograd kernels at all (a 16-channel convolution probed).
bool winograd_on_this_cpu();

// conv2d through oneDNN's Winograd kernels, differentiable in x, w and bias (each as it requires grad;
// bias may be undefined). The output is channels-last when x or w is, as ATen's. Throws when
// !winograd_applies.
at::Tensor winograd_conv2d(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const ConvAttrs& attrs);

// What follows a convolution in the graph, run inside the Winograd kernel (oneDNN's post-ops) when an
// evaluation needs no value in between: the residual added to the output (undefined: none; the output's
// shape), then ReLU. One pass over the output where the add and the ReLU made two more; each value as
// the separate ops round it (the sum is one float addition, ReLU exact).
struct ConvEpilogue {
  at::Tensor residual;
  bool relu = false;
  // The caller holds the residual's only reference and reads it no more: where its memory lies as the
  // kernel writes (blocked, or NHWC with 16 channels) the output is written into it, and no copy is made.
  bool residual_buffer_free = false;
};

// Which activations of a fused convolution lie in oneDNN's blocked layout (nChw16c, held as a contiguous
// [N, C/16, H, W, 16] tensor) instead of being 4-d: an evaluation passes the activations between two
// Winograd convolutions on that way, where ATen's layouts cost a reorder out of the kernel's layout and one
// back in for every convolution with more than 16 channels (a 16-channel NHWC tensor is already blocked).
struct WinogradBlocking {
  bool input = false, residual = false, output = false;
};

// Whether oneDNN runs this convolution (x: input, w: weight), followed by `epilogue` (a residual of the
// output's shape, float32, on the CPU), with Winograd kernels on this machine; x and the residual as
// `blocking` says.
bool winograd_applies(const at::Tensor& x, const at::Tensor& w, const ConvAttrs& attrs, const ConvEpilogue& epilogue = {},
                      const WinogradBlocking& blocking = {});

// winograd_conv2d followed by `epilogue`, without autograd, on and to activations laid out as `blocking`
// says. Throws when !winograd_applies.
at::Tensor winograd_conv2d_fused(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const ConvAttrs& attrs,
                                 const ConvEpilogue& epilogue, const WinogradBlocking& blocking = {});

// A blocked activation ([N, C/16, H, W, 16]) as the 4-d channels-last tensor [N, C, H, W] it holds.
at::Tensor from_blocked(const at::Tensor& blocked);

// A conv node's convolution: Winograd where `algorithm` asks for it and it applies, else ATen's conv2d.
at::Tensor convolve(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, const ConvAttrs& attrs,
                    ConvAlgorithm algorithm);

}  // namespace xdq
