#pragma once
// The results as files and tables: results.json and results.csv (the contract in experiment/results.h),
// the run table of report.md, and the cross-domain gap matrices.
#include <string>
#include <vector>

#include "xdq/experiment/results.h"
#include "xdq/statistics.h"

namespace xdq {

// The bootstrap 95 % interval of a top-1 measured on n images (statistics.h).
Interval top1_interval(double top1, std::int64_t n);
// A run's setting as tables name it: "w4a4/mse/nearest" (bits, calibrator label, rounding label).
std::string run_setting(const RunResult& run);
// The run's test domain with the lowest quantized top-1; null with fewer than two test domains.
const DomainResult* worst_domain(const RunResult& run);

std::string results_json(const ExperimentResults& results);
std::string results_csv(const ExperimentResults& results);
// layer_shift.csv: results.json's "layer_shift" rows as a table (written when layer shift was measured).
std::string layer_shift_csv(const ExperimentResults& results);
// An RFC 4180 field: quoted when it holds a comma, a quote or a line break (quotes doubled).
std::string csv_field(const std::string& text);
std::string results_markdown(const ExperimentResults& results, const std::string& header);
// The exported runs: simulated vs runtime top-1 per test domain, and exports or runtimes that failed ("" when none).
std::string export_markdown(const ExperimentResults& results);

// Runs whose calibration set a selector chose: per model, setting and set size, every selector against
// random (mean ± std over seeds), the chosen sets' domain composition and the selectors' measures.
std::string selection_markdown(const ExperimentResults& results);

// The cross-domain matrix of one setting (model x bits x calibrator x rounding x calibration size): rows
// are calibration domains A, columns test domains B; repeats (calibration seeds) are averaged.
struct GapMatrix {
  std::string model, setting;  // setting: "w4a4/mse/nearest"
  std::vector<std::string> calibration_domains, test_domains;
  std::vector<std::vector<double>> quant_top1;  // [A][B], mean over repeats, NaN where not run
  std::vector<std::vector<double>> quant_std;   // [A][B], standard deviation over repeats (0 for one)
  int repeats = 1;
  std::vector<double> fp32_top1;                // [B]
  std::vector<std::vector<double>> runtime_top1;  // [A][B], the exported model in `runtime`; NaN where not run
  std::string runtime;                            // the int8 runtime of export.runtime ("" when none ran)
  // [A][B]: McNemar's exact p-value of the cell's run against the in-domain run on B's images (one run
  // per cell, both with per-image results); NaN where there is no such pair.
  std::vector<std::vector<double>> in_domain_p;
};
std::vector<GapMatrix> gap_matrices(const ExperimentResults& results);
// Markdown: quantized top-1 per (A, B), the gap to calibrating in-domain (A = B, when B is also a
// calibration domain; * where McNemar's test finds it significant at 5 %), the runtime's top-1 and its difference to the simulation where exported runs were
// checked in an int8 runtime, and the gap to FP32 on B, in points.
std::string gap_matrix_markdown(const GapMatrix& m);

}  // namespace xdq
