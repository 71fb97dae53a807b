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
#include <iosfwd>
#include <string>
#include <vector>

#include "xdq/experiment/analysis_results.h"
#include "xdq/experiment/config.h"
#include "xdq/experiment/runner.h"

namespace xdq {

// The analysis jobs, one per model and bit setting: job K = model K / |bits|, setting K % |bits|.
std::vector<std::string> analysis_job_ids(const std::vector<ModelEntry>& models, const std::vector<BitSetting>& bit_settings);

// Measures every job (or options.only_job; options.merge_only: none), reading finished ones from their
// shards in options.out_dir; report/analysis_report.h renders the result.
AnalysisRun run_analysis(const ExperimentConfig& cfg, PluginRegistry& registry, std::ostream& progress,
                         const RunOptions& options = {});

}  // namespace xdq
