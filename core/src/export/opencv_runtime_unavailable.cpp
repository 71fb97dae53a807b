#include "xdq/error.h"
#include "xdq/export/runtime.h"

namespace xdq {

struct OpenCvRuntime::Impl {};

OpenCvRuntime::OpenCvRuntime(const std::string& onnx_path) {
  throw Error(onnx_path + ": this xdq was built without OpenCV's dnn module; the runtime check needs it");
}
at::Tensor OpenCvRuntime::forward(const at::Tensor&) { return {}; }
std::vector<at::Tensor> OpenCvRuntime::forward(const at::Tensor&, const std::vector<std::string>&) { return {}; }
std::string OpenCvRuntime::name() const { return "OpenCV"; }
int OpenCvRuntime::int8_layers() const { return 0; }
std::vector<std::string> OpenCvRuntime::layer_types() const { return {}; }

}  // namespace xdq
