#pragma once
// What `xdq analyze` measures (experiment/analysis_runner.h), as data: per model and bit setting, the
// layers' errors and statistics, the merges, the cross-domain table and the mixed-precision search.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "xdq/analysis/analysis.h"
#include "xdq/experiment/config.h"
#include "xdq/experiment/results.h"
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
  ResultsSource source;
  AnalysisSettings options;
  int threads = 0;
  std::vector<SettingAnalysis> settings;  // models x bit settings, in config order (those present)
  std::vector<std::string> missing_jobs;  // merge_only: jobs without a shard
};

}  // namespace xdq
