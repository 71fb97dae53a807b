#pragma once
// A quantized model leaves xdq. For one calibrated (and rounded) model it writes:
//   model.pt           TorchScript: the BN-folded graph with its rounded weights and a fake-quant op on every
//                      quantized activation; torch.jit.load gives xdq's simulated outputs.
//   model.onnx         ONNX opset 13 in QDQ form: integer weight initializers with DequantizeLinear (per-channel
//                      with axis 0), QuantizeLinear/DequantizeLinear on every quantized activation.
//   model_fp32.onnx    the same graph without Q/DQ (weights already rounded): what encodings and the
//                      TensorRT cache annotate.
//   encodings.json     AIMET/QNN quantization overrides, keyed by the ONNX tensor names.
//   calibration.cache  TensorRT's INT8 calibration cache (symmetric per-tensor activations only).
//   parity.pt          a TorchScript module holding `inputs` (a batch) and xdq's `logits` for it.
// ONNX tensors are named after xdq's layers: a layer's output is "<module path>", its weight
// "<module path>.weight"; a quantized tensor T has "T_scale", "T_zero_point", its integer "T_quantized" and
// the dequantized "T_dequant" that float operators read (OpenCV takes any name ending in "quantized" for
// an integer tensor).
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "xdq/ir/preprocess.h"
#include "xdq/quant/ptq.h"

namespace xdq {

// torchscript, onnx, encodings, tensorrt.
const std::vector<std::string>& export_format_names();
// Why `format` cannot express a model quantized with `scheme` ("" when it can).
std::string export_format_limit(const std::string& format, const Scheme& scheme);

struct ExportRequest {
  std::vector<std::string> formats;
  // The runtime that will run it (export/runtime.h): "opencv" also writes model_opencv.onnx, the form
  // OpenCV's DNN module imports (see below); "onnxruntime" writes model.onnx and model_probes.onnx (model.onnx
  // with every quantized activation's dequantized tensor as an extra output); "" neither.
  std::string runtime;
  bool float_model = false;    // model_fp32.onnx whatever the formats (the float twin a runtime is timed against)
  at::Tensor example;          // a preprocessed batch [N, C, H, W], N >= 2: shapes, and the parity batch
  Preprocess pre;              // written into model.pt as input_mean / input_std
};

struct ExportedModel {
  std::vector<std::string> files;  // file names inside the folder
  std::string runtime_model;       // path of the runtime's model (model_opencv.onnx, model.onnx) when asked
  std::string runtime_probe_model; // path of model_probes.onnx (onnxruntime)
  int int8_layers = 0;             // conv layers that model_opencv.onnx runs as integer kernels
  // Per quantized activation (index in model.activations()): the tensor of the runtime's model holding its
  // dequantized value, to compare the runtime with the simulation layer by layer.
  std::map<int, std::string> runtime_tensors;
  int layers = 0;                  // conv/linear layers
};

// Writes the artefacts into `dir`. They are made in a sibling folder that replaces `dir` only once every
// file is written, so a failure (an operator the ONNX writer does not know, a weight off its grid) leaves
// nothing; the error names the layer.
//
// model_opencv.onnx: OpenCV 4.6 runs int8 only in the QOperator form with int8 zero points and tensors
// named "<T>_quantized" / "<T>_scale" / "<T>_zero_point". A conv becomes QLinearConv (int8 kernel, int32
// bias, requantized output) where its input is quantized, its weights are symmetric and its output is
// quantized directly or through a ReLU whose quantizer starts at 0; every other layer runs in float on
// dequantized inputs and the rounded weights, as xdq simulates it.
ExportedModel export_quantized_model(const QuantizedModel& model, const ExportRequest& request, const std::string& dir);

}  // namespace xdq
