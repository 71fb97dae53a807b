#pragma once
// An exported ONNX model run by an int8 runtime independent of xdq and LibTorch, for the
// simulation-to-runtime gap (runtime_top1 beside quant_top1):
//   opencv       OpenCV's DNN module on model_opencv.onnx (needs a build with OpenCV's dnn module);
//   onnxruntime  ONNX Runtime's CPU execution provider on model.onnx (QDQ), graph optimizations on, through
//                tools/onnxruntime_bridge.js run by Node with the npm package onnxruntime-node
//                (tools/install-deps.sh installs both).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>

namespace xdq {

struct ExportedModel;

class ModelRuntime {
 public:
  virtual ~ModelRuntime();
  // [N, C, H, W] float32 -> the model's first output.
  virtual at::Tensor forward(const at::Tensor& input) = 0;
  // The values of the tensors (ONNX names) `names` for `input`.
  virtual std::vector<at::Tensor> forward(const at::Tensor& input, const std::vector<std::string>& names) = 0;
  // "OpenCV 4.6.0", "ONNX Runtime 1.30.0".
  virtual std::string name() const = 0;
  // Conv/linear layers the runtime runs as integer kernels.
  virtual int int8_layers() const = 0;
};

// `kind` (opencv, onnxruntime) on `exported`, with `threads` intra-op threads. An Error saying why when the
// runtime is missing or cannot import the model.
std::unique_ptr<ModelRuntime> open_runtime(const std::string& kind, const ExportedModel& exported, int threads);

// Median milliseconds per batch of an export's float model (model_fp32.onnx) and of its int8 QDQ model
// (model.onnx) in ONNX Runtime's CPU execution provider, graph optimizations on.
struct RuntimeTiming {
  int batch = 0, threads = 0;
  double float_ms = 0.0, int8_ms = 0.0;
};

// ONNX Runtime's speed on the export in `dir` for inputs [batch, C, H, W] (`input_shape` = C, H, W): per batch
// size and intra-op thread count, the medians of `rounds` interleaved rounds (one float run, one int8 run,
// ...) so that a noisy machine slows both alike (tools/onnxruntime_speed.js). An Error saying why when ONNX
// Runtime is missing or fails.
std::vector<RuntimeTiming> time_onnxruntime(const std::string& dir, const std::vector<std::int64_t>& input_shape,
                                            const std::vector<int>& batches, const std::vector<int>& threads, int rounds);

class OpenCvRuntime : public ModelRuntime {
 public:
  // Imports `onnx_path`; an Error quoting OpenCV's reason (it names the node) when it cannot.
  explicit OpenCvRuntime(const std::string& onnx_path);
  at::Tensor forward(const at::Tensor& input) override;
  std::vector<at::Tensor> forward(const at::Tensor& input, const std::vector<std::string>& names) override;
  std::string name() const override;
  int int8_layers() const override;  // its ConvolutionInt8 layers
  // The network's layers as OpenCV built them (type per layer, e.g. ConvolutionInt8, Convolution).
  std::vector<std::string> layer_types() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

class OnnxRuntime : public ModelRuntime {
 public:
  // Starts the bridge on `model`, and on `probe_model` (the same model with intermediate tensors as extra
  // outputs; "" for none) for forward(input, names). ONNX Runtime's optimized graph of `model` is saved to
  // `optimized_out`, where int8_layers() counts its integer kernels.
  OnnxRuntime(const std::string& model, const std::string& probe_model, const std::string& optimized_out, int threads);
  ~OnnxRuntime() override;
  OnnxRuntime(const OnnxRuntime&) = delete;
  OnnxRuntime& operator=(const OnnxRuntime&) = delete;
  at::Tensor forward(const at::Tensor& input) override;
  std::vector<at::Tensor> forward(const at::Tensor& input, const std::vector<std::string>& names) override;
  std::string name() const override;
  int int8_layers() const override { return int8_layers_; }
  // Where the bridge looks for onnxruntime-node, and why ONNX Runtime cannot run here ("" when it can).
  static std::string node_modules();
  static std::string unavailable_reason();

 private:
  std::vector<at::Tensor> request(std::uint32_t session, const at::Tensor& input);
  void shut_down();  // asks the bridge to quit and waits for it
  int socket_ = -1;
  int pid_ = -1;
  std::vector<std::vector<std::string>> outputs_;  // per session, its output names
  int int8_layers_ = 0;
};

}  // namespace xdq
