#pragma once
// The one place that executes a job of the plan (private to the experiment module): calibration data
// (selected or loaded), the quantize recipe's stages (plugin/quantize.h), evaluation, export. A run
// that throws is recorded as failed and the job goes on (unless on_error is stop).
#include <atomic>
#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <map>
#include <string>
#include <vector>

#include "prepare.h"
#include "scoring.h"
#include "xdq/experiment/plan.h"
#include "xdq/experiment/results.h"
#include "xdq/export/export.h"

namespace xdq {

struct JobOutput {
  std::vector<RunResult> runs;
  std::vector<LayerShiftRow> layer_shift;
  std::map<std::string, std::string> files;  // report files of the runs (reconstruction curves)
};

// What a run of the whole experiment recorded about its inputs (written into config.resolved.yaml).
struct ModelTrace {
  std::string hash;  // of the model file
  Preprocess pre;
  InputShape shape;
  int folded_bn = 0;
};

// A run's result before it ran: its model, settings, passes, calibration set (of `count` images) and selection.
RunResult run_header(const std::string& model, const std::vector<PluginChoice>& passes, const JobSpec& job,
                     const RunSpec& spec, std::int64_t count, const SelectionRecord& selection);

class Pipeline {
 public:
  // Imports every model (or those marked in `needed`), checks it against its test domains, loads them and
  // measures FP32 accuracy: everything that can be refused is refused here, before any job. Without
  // `evaluate` no test image is evaluated (RunOptions::score_only).
  Pipeline(const ExperimentConfig& cfg, PluginRegistry& registry, DomainCache& domains, std::ostream& progress,
           const std::vector<bool>& needed = {}, bool evaluate = true);

  const CalibrationSet& calibration_set(const JobSpec& job);
  const PreparedModel& prepared(std::size_t model) const { return models_[model].prepared; }
  const ModelTrace& trace(std::size_t model) const { return models_[model].trace; }

  // Every run of `job`; thread-safe across jobs once calibration_set(job) was called for each.
  JobOutput run(const JobSpec& job, std::ostream& log, StatisticsCache& statistics) const;
  // Where `export:` writes a run's artefacts: <root>/<run id as a file name>, or `root` itself when `flat`
  // (`xdq export`, one run). Unset: exports are refused with an error in the run.
  void set_export_root(std::string root, bool flat) {
    export_root_ = std::move(root);
    export_flat_ = flat;
  }
  // Only this run of its job (`xdq export`); the other runs of the job are not computed.
  void set_only_run(std::string id) { only_run_ = std::move(id); }
  // Runs to come; the run lines count them and give an ETA from the time since this call.
  void set_run_counter(std::size_t total) {
    total_runs_ = total;
    counting_since_ = std::chrono::steady_clock::now();
  }

 private:
  struct Model {
    PreparedModel prepared;
    std::vector<double> fp32_top1;  // per test domain
    Graph folded;
    ModelTrace trace;
  };
  // The job's set chosen by its selector from the pool (calibration.selector), with what the choice was.
  struct Selected {
    Dataset set;
    SelectionRecord record;
  };
  Selected select_calibration_set(const JobSpec& job);
  const SelectionRecord& selection(const JobSpec& job) const {
    static const SelectionRecord none;
    const auto it = selected_.find(&job);
    return it == selected_.end() ? none : it->second.record;
  }
  void record_layer_shift(const JobSpec& job, const QuantizedModel& calibrated, const CalibrationImages& images,
                          const std::string& setting, JobOutput& out) const;
  // The run's cells without top-1 (scores only): each names its test domain.
  RunResult unevaluated(const JobSpec& job, const RunSpec& spec) const;
  // The run's top-1 on every test domain; with `predictions`, the predicted classes per domain and batch.
  RunResult evaluate(const JobSpec& job, const RunSpec& spec, const QuantizedModel& quantized, std::ostream& log,
                     std::vector<std::vector<at::Tensor>>* predictions = nullptr) const;
  RunResult failed(const JobSpec& job, const RunSpec& spec, const std::string& error, std::ostream& log) const;
  QuantizeRecipe recipe(const JobSpec& job, const RunSpec& spec, std::ostream& log) const;
  void run_rounding(const JobSpec& job, const RunSpec& spec, const QuantizedModel& calibrated,
                    const CalibrationData& data, const JobScoring* scoring, std::ostream& log, JobOutput& out) const;
  // scoring: the job's scorers, their FP passes over its set and each test domain's unlabeled sample done.
  void load_scoring_targets(const JobSpec& job);
  JobScoring job_scoring(const JobSpec& job) const;
  // export: the artefacts of a run, and with a runtime its top-1 on every test domain, compared image by
  // image with the simulated model's `predictions` (evaluate()'s).
  void export_run(const JobSpec& job, const QuantizedModel& quantized, const CalibrationImages& images,
                  const std::vector<std::vector<at::Tensor>>& predictions, std::ostream& log, RunResult& run) const;
  void runtime_check(const JobSpec& job, const QuantizedModel& quantized, const ExportedModel& exported,
                     const std::vector<std::vector<at::Tensor>>& predictions, std::ostream& log, RunResult& run) const;

  const ExperimentConfig& cfg_;
  PluginRegistry& registry_;
  DomainCache& domains_;
  std::vector<Model> models_;
  std::map<const JobSpec*, CalibrationSet> calibration_;
  std::map<const JobSpec*, Selected> selected_;
  std::map<std::size_t, std::vector<at::Tensor>> scoring_targets_;  // per model: each test domain's sample
  std::ostream& progress_;
  std::string run_counter() const;
  std::size_t total_runs_ = 0;
  std::chrono::steady_clock::time_point counting_since_;
  mutable std::atomic<std::size_t> finished_runs_{0};
  std::string export_root_, only_run_;
  bool export_flat_ = false;
  bool evaluate_ = true;
};

}  // namespace xdq
