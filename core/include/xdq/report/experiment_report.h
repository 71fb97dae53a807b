#pragma once
// Every file `xdq run` writes, rendered from what the run returned: config.resolved.yaml, results.json,
// results.csv, report.md (runs, gap matrices, per-layer shift, loss curves, samples) and its PNGs.
#include <iosfwd>
#include <map>
#include <string>

#include "xdq/experiment/runner.h"

namespace xdq {

// File name -> bytes.
std::map<std::string, std::string> experiment_report(const ExperimentRun& run);

}  // namespace xdq
