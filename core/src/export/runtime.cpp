// The int8 runtimes behind export.runtime, chosen by name.
#include "xdq/export/runtime.h"

#include <filesystem>

#include "xdq/error.h"
#include "xdq/export/export.h"

namespace xdq {

ModelRuntime::~ModelRuntime() = default;

std::unique_ptr<ModelRuntime> open_runtime(const std::string& kind, const ExportedModel& exported, int threads) {
  if (kind == "opencv") return std::make_unique<OpenCvRuntime>(exported.runtime_model);
  if (kind == "onnxruntime")
    return std::make_unique<OnnxRuntime>(exported.runtime_model, exported.runtime_probe_model,
                                         (std::filesystem::path(exported.runtime_model).parent_path() / "model_onnxruntime_optimized.onnx").string(),
                                         threads);
  throw Error("unknown runtime '" + kind + "' (opencv, onnxruntime)");
}

}  // namespace xdq
