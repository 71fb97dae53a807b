#include "models.h"

#include <ostream>

#include "xdq/error.h"
#include "xdq/exec/convolution.h"

namespace xdq {

ImportedModel import_for_experiment(const ExecutionSettings& execution, const std::string& path) {
  ImportedModel model = import_torchscript(path);
  model.graph.to(execution.torch_device());
  // memory_format: every engine, and every copy of the graph (folded, quantized), runs in this layout.
  model.graph.channels_last =
      execution.memory_format == "auto" ? channels_last_pays(execution.torch_device()) : execution.memory_format == "channels_last";
  model.graph.convolution = conv_algorithm(execution.convolution);
  return model;
}

void warn_if_convolutions_stay_direct(const ExecutionSettings& execution, std::ostream& progress) {
  if (execution.convolution == "winograd" && !winograd_on_this_cpu())
    progress << "xdq: warning: convolution: winograd: this CPU has no oneDNN Winograd kernels (AVX-512 needed); "
                "every convolution runs direct\n";
}

InputShape model_input_shape(const ModelEntry& entry, const ImportedModel& model) {
  const auto layers = model.graph.layer_nodes();
  if (layers.empty()) throw Error(entry.path + ": model has no conv or linear layer to quantize");
  const Node& first = model.graph.nodes[layers.front()];
  InputShape shape = entry.input;
  shape.channels = first.kind == OpKind::Conv ? first.weight.size(1) * first.conv.groups : 1;
  if (!model.input_size.empty()) {
    const std::int64_t h = model.input_size[0], w = model.input_size[1];
    if (entry.size_declared && (h != shape.height || w != shape.width))
      throw Error(entry.size_where + ": model '" + entry.name + "' feeds " + std::to_string(shape.height) + "x" +
                  std::to_string(shape.width) + " images, but " + entry.path + " declares input_size " + std::to_string(h) +
                  "x" + std::to_string(w));
    shape.height = h;
    shape.width = w;
  }
  return shape;
}

Preprocess model_preprocess(const ModelEntry& entry, const ImportedModel& model) {
  return entry.has_preprocess ? Preprocess{entry.mean, entry.std} : model.preprocess;
}

}  // namespace xdq
