#pragma once
// An exported ONNX model run by OpenCV's DNN module: an int8 runtime independent of xdq and LibTorch, for
// the simulation-to-runtime gap (runtime_top1 beside quant_top1). Needs a build with OpenCV's dnn module.
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>

namespace xdq {

class OpenCvRuntime {
 public:
  // Imports `onnx_path`; an Error quoting OpenCV's reason (it names the node) when it cannot.
  explicit OpenCvRuntime(const std::string& onnx_path);
  // [N, C, H, W] float32 -> the model's first output.
  at::Tensor forward(const at::Tensor& input);
  // The values of the tensors (ONNX names) `names` for `input`; none named: the model's first output.
  std::vector<at::Tensor> forward(const at::Tensor& input, const std::vector<std::string>& names);
  // The network's layers as OpenCV built them (type per layer, e.g. ConvolutionInt8, Convolution).
  std::vector<std::string> layer_types() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace xdq
