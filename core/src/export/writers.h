#pragma once
// The writers behind export_quantized_model (private to the export module).
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/ivalue.h>
#include <torch/csrc/jit/api/module.h>

#include "xdq/ir/preprocess.h"
#include "xdq/quant/ptq.h"

namespace xdq::exporting {

// An identifier for `text` ("layer1.block0.conv1" -> "layer1_block0_conv1"), unique among `taken`.
std::string unique_identifier(const std::string& text, std::map<std::string, int>& taken);

// A TorchScript module saved to `path` through write_file_atomically: LibTorch's own file writer throws
// from its destructor when the disk is full, which ends the process.
void save_module(const torch::jit::Module& module, const std::string& path);

// The quantized model as TorchScript (see export.h), saved to `path`.
void write_torchscript(const QuantizedModel& model, const Preprocess& pre, const at::Tensor& example,
                       const std::string& path);

enum class OnnxForm {
  Float,   // no Q/DQ, rounded float weights
  Qdq,     // QuantizeLinear/DequantizeLinear, integer weights
  OpenCv,  // QLinearConv where OpenCV 4.6 can run it, else QDQ on activations with float weights
};

struct OnnxModel {
  std::string bytes;                       // the serialized ModelProto
  std::map<int, std::string> activations;  // quantized activation (index in model.activations()) -> tensor name
  std::map<int, std::string> dequantized;  // ... -> the tensor holding its dequantized value (Q/DQ forms)
  std::vector<std::string> weights;        // per layer (index in model.layers()): the weight's name
  int int8_layers = 0;
};

// `values_a`, `values_b`: every value of the FP graph run on batches of two sizes (Executor::all_values);
// shapes and the integers models compute from them come from these runs.
OnnxModel write_onnx(const QuantizedModel& model, const std::vector<c10::IValue>& values_a,
                     const std::vector<c10::IValue>& values_b, OnnxForm form, const std::string& name);

// The serialized model `bytes` with the float tensors `names` as extra graph outputs.
std::string with_outputs(const std::string& bytes, const std::vector<std::string>& names);

// Conv and linear layers the ONNX model at `path` runs as integer kernels (QLinearConv, QLinearMatMul,
// ConvInteger, MatMulInteger, QGemm): counted in ONNX Runtime's optimized graph.
int integer_kernels(const std::string& path);

// AIMET / QNN quantization-override encodings (JSON) and TensorRT's calibration cache (text).
std::string encodings_json(const QuantizedModel& model, const OnnxModel& names);
std::string tensorrt_cache(const QuantizedModel& model, const OnnxModel& names);

}  // namespace xdq::exporting
