#pragma once
// `xdq analyze`: the outlier-layer analysis of every model and bit setting of an experiment (first
// calibrator, nearest rounding), with ranges calibrated on each calibration domain and measured on each
// test domain, and the mixed-precision fallback. Each (model, bit setting) is a job with its own shard
// in <out>/analysis_jobs (like `xdq run`'s jobs: resumable, one per process, merged), checkpointed after
// each of its phases (layers, cross-domain, mixed precision). report/analysis_report.h writes:
//   <model>_<bits>/analysis.json   {"layers": [{name, op, sqnr_db, cosine, top1_drop, flags, ...}],
//                                   "pareto": [{size_bytes, quant_top1, bits}], "chosen", "merges", "cross_domain"}
//   <model>_<bits>/sqnr.png, pareto.png, mixed_precision.yaml (an overrides list to include)
//   analysis.md
#include <cstdint>
#include <iosfwd>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "xdq/analysis/analysis.h"
#include "xdq/experiment/config.h"
#include "xdq/experiment/runner.h"
#include "xdq/quant/ptq.h"

namespace xdq {

// One quantized layer: its errors when quantized alone, statistics, and the flags that name a cause.
struct LayerRow {
  std::string name, op;
  OutputError error;
  double graph_sqnr_db = 0;
  WeightStats folded, unfolded;
  double activation_outlier = 1;
  std::vector<std::string> flags;
};

struct ParetoPoint {
  std::int64_t size_bytes = 0;
  double quant_top1 = 0;
  std::map<std::string, int> bits;
  int raised = 0;  // how many of the most sensitive layers are at fallback bits
};

// Everything measured for one model at one bit setting; rendered into analysis.json, the report section,
// mixed_precision.yaml and two charts.
struct SettingAnalysis {
  std::string tag;  // <model>_<bits>
  const ModelEntry* entry = nullptr;
  const BitSetting* bits = nullptr;
  PtqSettings settings;
  std::vector<LayerRow> rows;
  std::vector<std::size_t> order;  // rows by layerwise SQNR, worst first
  std::vector<MergeStats> merges;
  nlohmann::json cross = nlohmann::json::array();
  std::vector<ParetoPoint> steps, pareto;
  std::optional<ParetoPoint> chosen;
  double fp32_top1 = 0;
  std::int64_t fp32_bytes = 0, images = 0;
};

struct AnalysisRun {
  int threads = 0;
  std::vector<SettingAnalysis> settings;  // models x bit settings, in config order (those present)
  std::vector<std::string> missing_jobs;  // merge_only: jobs without a shard
};

// The analysis jobs, one per model and bit setting: job K = model K / |bits|, setting K % |bits|.
std::vector<std::string> analysis_job_ids(const ExperimentConfig& cfg);

// An Error when `out_dir` holds the analysis shards of another config (checked before any work).
void check_analysis_resumable(const ExperimentConfig& cfg, const std::string& out_dir);

// Measures every job (or options.only_job; options.merge_only: none), reading finished ones from their
// shards in options.out_dir; report/analysis_report.h renders the result.
AnalysisRun run_analysis(const ExperimentConfig& cfg, PluginRegistry& registry, std::ostream& progress,
                         const RunOptions& options = {});

}  // namespace xdq
