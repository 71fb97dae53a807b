#include "writers.h"
#include "xdq/error.h"

namespace xdq::exporting {

OnnxModel write_onnx(const QuantizedModel&, const std::vector<c10::IValue>&, const std::vector<c10::IValue>&, OnnxForm,
                     const std::string&) {
  throw Error("ONNX export: this xdq was built without ONNX (libonnx-dev); TorchScript export works without it");
}

}  // namespace xdq::exporting
