#include "xdq/experiment/load.h"

#include <algorithm>
#include <filesystem>

#include "xdq/error.h"
#include "xdq/experiment/plan.h"

namespace xdq {

namespace {

// export.runs: every selector names runs of the plan, whose activation bits the formats can hold.
void check_export_runs(const ExportSettings& e, const Plan& plan) {
  if (e.runs.empty()) return;
  std::vector<std::string> ids;
  for (const JobSpec& job : plan.jobs)
    for (const RunSpec& r : job.runs) ids.push_back(r.id);
  const auto wants = [&](const char* format) { return std::find(e.formats.begin(), e.formats.end(), format) != e.formats.end(); };
  const bool integer_formats = e.runtime != "none" || wants("onnx") || wants("tensorrt");
  for (const auto& s : e.runs) {
    ExportSettings one{{s}, {}, {}};
    bool found = false;
    for (const JobSpec& job : plan.jobs)
      for (const RunSpec& r : job.runs) {
        if (!one.selects(r.id, job.entry->name, r.bits->label(), r.calibrator->label, r.rounding->label)) continue;
        found = true;
        if (integer_formats && r.bits->a_bits > 8)
          throw Error(s.where + ": run " + r.id + " has " + std::to_string(r.bits->a_bits) +
                      "-bit activations; ONNX QuantizeLinear (and the runtime) hold 8 bits at most");
        if (wants("tensorrt") && r.bits->a_bits != 8)
          throw Error(s.where + ": run " + r.id + " has " + std::to_string(r.bits->a_bits) +
                      "-bit activations; TensorRT's INT8 calibration cache describes 8-bit ones (select the 8-bit runs)");
      }
    if (!found)
      throw Error(s.where + ": no run of this experiment matches" + (s.id.empty() ? "" : " '" + s.id + "'") +
                  "; closest run ids: " + closest_names(s.id, ids));
  }
}


}  // namespace

ExperimentConfig load_experiment(const std::string& path, const std::vector<std::string>& overrides,
                                 PluginRegistry& registry) {
  ExperimentConfig cfg = read_experiment(ConfigNode::load_file(path), path,
                                         std::filesystem::path(path).parent_path().string(), overrides, registry);
  check_export_runs(cfg.exports, plan_experiment(cfg));
  return cfg;
}

ExperimentConfig load_experiment_text(const std::string& text, const std::string& label, const std::string& base_dir,
                                      const std::vector<std::string>& overrides, PluginRegistry& registry) {
  ExperimentConfig cfg = read_experiment(ConfigNode::parse(text, label), label, base_dir, overrides, registry);
  check_export_runs(cfg.exports, plan_experiment(cfg));
  return cfg;
}

}  // namespace xdq
