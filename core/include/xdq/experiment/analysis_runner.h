#pragma once
// `xdq analyze`: the outlier-layer analysis of every model and bit setting of an experiment (first
// calibrator, nearest rounding), with ranges calibrated on each calibration domain and measured on each
// test domain, and the mixed-precision fallback. Writes, all or nothing, into the output folder:
//   <model>_<bits>/analysis.json   {"layers": [{name, op, sqnr_db, cosine, top1_drop, flags, ...}],
//                                   "pareto": [{size_bytes, quant_top1, bits}], "chosen", "merges", "cross_domain"}
//   <model>_<bits>/sqnr.png, pareto.png, mixed_precision.yaml (an overrides list to include)
//   report.md
#include <iosfwd>
#include <string>

#include "xdq/experiment/config.h"

namespace xdq {

void run_analysis_to(const ExperimentConfig& cfg, PluginRegistry& registry, const std::string& out_dir,
                     std::ostream& progress);

}  // namespace xdq
