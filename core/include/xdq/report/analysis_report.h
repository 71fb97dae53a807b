#pragma once
// The files of `xdq analyze`, from what run_analysis measured: per model and bit setting
// <model>_<bits>/analysis.json, mixed_precision.yaml, sqnr.png, pareto.png, and analysis.md.
#include <iosfwd>
#include <map>
#include <string>

#include "xdq/experiment/analysis_runner.h"

namespace xdq {

std::map<std::string, std::string> analysis_report(const AnalysisRun& run);

}  // namespace xdq
