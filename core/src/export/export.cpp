#include "xdq/export/export.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>
#include <torch/csrc/jit/api/module.h>

#include "writers.h"
#include "xdq/error.h"
#include "xdq/files.h"

namespace xdq {

namespace fs = std::filesystem;

const std::vector<std::string>& export_format_names() {
  static const std::vector<std::string> names = {"torchscript", "onnx", "encodings", "tensorrt"};
  return names;
}

std::string export_format_limit(const std::string& format, const Scheme& scheme) {
  if (format != "tensorrt") return "";
  const QuantSpec& a = scheme.activations;
  if (!a.symmetric || a.unsigned_range || scheme.unsigned_after_relu)
    return "TensorRT's calibration cache holds one symmetric signed scale per tensor; the preset '" + scheme.name +
           "' quantizes activations " + (a.symmetric ? "on an unsigned grid after ReLU" : "asymmetrically");
  if (a.pow2_scale || scheme.weights.pow2_scale)
    return "TensorRT derives its scales from ranges; the preset '" + scheme.name + "' constrains scales to powers of two";
  if (!scheme.weights.symmetric)
    return "TensorRT quantizes weights symmetrically; the preset '" + scheme.name + "' has asymmetric weights";
  return "";
}

namespace exporting {

// AIMET's encoding of one grid: integers q in [0, 2^b - 1] stand for (q + offset) * scale.
nlohmann::json encoding(const QuantSpec& spec, double scale, std::int64_t zero, std::int64_t qmin, std::int64_t qmax) {
  const std::int64_t offset = qmin - zero;
  return {{"bitwidth", spec.bits},
          {"dtype", "int"},
          {"is_symmetric", spec.symmetric ? "True" : "False"},
          {"min", static_cast<double>(offset) * scale},
          {"max", static_cast<double>(qmax - zero) * scale},
          {"offset", offset},
          {"scale", scale}};
}

// One encoding per channel of a quantizer (one for a per-tensor one).
nlohmann::json encodings_of(const QuantSpec& spec, const QParams& q) {
  const at::Tensor s = q.scale.reshape({-1}).to(at::kCPU, at::kDouble), z = q.zero_point.reshape({-1}).to(at::kCPU, at::kLong);
  nlohmann::json list = nlohmann::json::array();
  for (std::int64_t c = 0; c < s.numel(); ++c)
    list.push_back(encoding(spec, s[c].item<double>(), z[c].item<std::int64_t>(), q.qmin, q.qmax));
  return list;
}

std::string encodings_json(const QuantizedModel& model, const OnnxModel& names) {
  nlohmann::json activations = nlohmann::json::object(), params = nlohmann::json::object();
  for (const auto& [index, tensor] : names.activations)
    activations[tensor] = encodings_of(model.activations()[index].spec, model.activations()[index].qparams);
  for (std::size_t i = 0; i < model.layers().size(); ++i)
    params[names.weights.at(i)] = encodings_of(model.layers()[i].spec, model.layers()[i].qparams);
  const nlohmann::json doc = {{"version", "0.6.1"},
                              {"activation_encodings", activations},
                              {"param_encodings", params},
                              {"excluded_layers", nlohmann::json::array()}};
  return doc.dump(2) + "\n";
}

// Header, then "name: <the float32 scale's bits in hex>" per tensor. The scale written is xdq's step s:
// TensorRT's dynamic range is then 127 s, the same grid without xdq's code -128.
std::string tensorrt_cache(const QuantizedModel& model, const OnnxModel& names) {
  std::string out = "TRT-8601-MinMaxCalibration\n";
  for (const auto& [index, tensor] : names.activations) {
    const ActivationQuantizer& a = model.activations()[index];
    if (a.qparams.per_channel() || a.qparams.zero_point.item<int>() != 0 || a.qparams.qmin >= 0 || a.spec.bits != 8)
      throw Error("TensorRT cache: activation '" + a.name + "' is not a symmetric signed 8-bit per-tensor grid");
    const float scale = a.qparams.scale.item<float>();
    std::uint32_t bits = 0;
    std::memcpy(&bits, &scale, sizeof bits);
    char hex[16];
    std::snprintf(hex, sizeof hex, "%x", bits);
    out += tensor + ": " + hex + "\n";
  }
  return out;
}

namespace {

void write_bytes(const fs::path& path, const std::string& bytes) {
  write_file_atomically(path.string(), [&](std::ostream& f) { f << bytes; });
}

// parity.pt: a batch and xdq's simulated logits for it, to check any loader of model.pt against.
void write_parity_batch(const QuantizedModel& model, const at::Tensor& inputs, const fs::path& path) {
  torch::jit::Module parity("__torch__.xdq.ParityBatch");
  parity.register_buffer("inputs", inputs.cpu().clone());  // a copy: a slice would save its whole storage
  parity.register_buffer("logits", model.executor().forward(inputs).cpu().contiguous());
  parity.define("def forward(self):\n    return self.logits\n");
  save_module(parity, path.string());
}

bool wants(const ExportRequest& r, const char* format) {
  return std::find(r.formats.begin(), r.formats.end(), format) != r.formats.end();
}

ExportedModel write_all(const QuantizedModel& model, const ExportRequest& request, const fs::path& dir) {
  ExportedModel out;
  out.layers = static_cast<int>(model.graph().layer_nodes().size());
  at::NoGradGuard no_grad;
  const Executor fp(model.graph());
  const std::vector<c10::IValue> values_a = fp.all_values(request.example.slice(0, 0, 2));
  const std::vector<c10::IValue> values_b = fp.all_values(request.example.slice(0, 0, 3));
  auto onnx = [&](OnnxForm form, const char* file) {
    exporting::OnnxModel m = write_onnx(model, values_a, values_b, form, "xdq");
    write_bytes(dir / file, m.bytes);
    out.files.push_back(file);
    return m;
  };
  if (wants(request, "torchscript")) {
    write_torchscript(model, request.pre, request.example, (dir / "model.pt").string());
    write_parity_batch(model, request.example, dir / "parity.pt");
    out.files.insert(out.files.end(), {"model.pt", "parity.pt"});
  }
  if (wants(request, "onnx") || request.runtime == "onnxruntime") {
    const exporting::OnnxModel qdq = onnx(OnnxForm::Qdq, "model.onnx");
    if (request.runtime == "onnxruntime") {
      std::vector<std::string> probes;
      for (const auto& [index, tensor] : qdq.dequantized) probes.push_back(tensor);
      write_bytes(dir / "model_probes.onnx", exporting::with_outputs(qdq.bytes, probes));
      out.files.push_back("model_probes.onnx");
      out.runtime_tensors = qdq.dequantized;
      out.runtime_model = "model.onnx";
      out.runtime_probe_model = "model_probes.onnx";
    }
  }
  if (wants(request, "encodings") || wants(request, "tensorrt") || request.float_model) {
    const exporting::OnnxModel names = onnx(OnnxForm::Float, "model_fp32.onnx");
    if (wants(request, "encodings")) {
      write_bytes(dir / "encodings.json", encodings_json(model, names));
      out.files.push_back("encodings.json");
    }
    if (wants(request, "tensorrt")) {
      write_bytes(dir / "calibration.cache", tensorrt_cache(model, names));
      out.files.push_back("calibration.cache");
    }
  }
  if (request.runtime == "opencv") {
    const exporting::OnnxModel runtime = onnx(OnnxForm::OpenCv, "model_opencv.onnx");
    out.int8_layers = runtime.int8_layers;
    out.runtime_tensors = runtime.dequantized;
    out.runtime_model = "model_opencv.onnx";
  }
  return out;
}

}  // namespace
}  // namespace exporting

ExportedModel export_quantized_model(const QuantizedModel& model, const ExportRequest& request, const std::string& dir) {
  for (const auto& f : request.formats)
    if (std::find(export_format_names().begin(), export_format_names().end(), f) == export_format_names().end())
      throw Error("export: unknown format '" + f + "' (torchscript, onnx, encodings, tensorrt)");
  if (!request.example.defined() || request.example.dim() != 4 || request.example.size(0) < 3)
    throw Error("export: the example batch must be [N >= 3, C, H, W]");
  for (const ActivationQuantizer& a : model.activations())
    if (a.spec.grid != Grid::uniform)  // QuantizeLinear / DequantizeLinear and the encodings hold affine grids only
      throw Error("export: activation '" + a.name + "' is on the " + a.spec.describe() +
                  " grid, which no export format can express");
  const fs::path final_dir = fs::absolute(dir).lexically_normal();
  if (fs::is_directory(final_dir) && !fs::is_empty(final_dir) && !fs::exists(final_dir / "export.json"))
    throw Error(dir + ": the folder holds files that are not an xdq export; it is not replaced");
  if (fs::exists(final_dir) && !fs::is_directory(final_dir)) throw Error(dir + ": exists and is not a folder");
  const fs::path partial = final_dir.parent_path() / ("." + final_dir.filename().string() + ".partial");
  fs::remove_all(partial);
  fs::create_directories(partial);
  try {
    ExportedModel out = exporting::write_all(model, request, partial);
    out.files.push_back("export.json");
    const nlohmann::json manifest = {{"files", out.files}, {"layers", out.layers}, {"opencv_int8_layers", out.int8_layers}};
    write_file_atomically((partial / "export.json").string(), [&](std::ostream& f) { f << manifest.dump(2) << "\n"; });
    fs::remove_all(final_dir);
    fs::rename(partial, final_dir);
    for (std::string* file : {&out.runtime_model, &out.runtime_probe_model})  // names in the folder -> paths
      if (!file->empty()) *file = (final_dir / *file).string();
    return out;
  } catch (...) {
    fs::remove_all(partial);
    throw;
  }
}

}  // namespace xdq
