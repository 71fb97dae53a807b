#pragma once
// Shared by `xdq run` and `xdq analyze` (private to the experiment module): models imported and checked
// against their test domains before any work starts, and the quantize recipe of a run.
#include <cstdint>
#include <iosfwd>
#include <vector>

#include "domains.h"
#include "models.h"
#include "xdq/data/test_images.h"
#include "xdq/experiment/config.h"
#include "xdq/plugin/quantize.h"
#include "xdq/quant/ptq.h"
#include "xdq/quant/statistics_cache.h"

namespace xdq {

struct PreparedModel {
  ImportedModel model;
  Preprocess pre;
  InputShape shape;
  std::vector<TestImages> tests;  // one per test domain
};

// Imports the model (import_for_experiment), checks the quantization's overrides and preset against it,
// its input size and the labels of the `test` domains (calibration sets are loaded by whoever uses them:
// the pipeline, per job, before the first job runs).
PreparedModel prepare_model(const ModelEntry& entry, const ExecutionSettings& execution, const TestSettings& test,
                            const QuantizationSettings& quantization, DomainCache& domains, std::ostream& progress);

PtqSettings ptq_settings(const QuantizationSettings& quantization, const BitSetting& bits);
// A run's quantize recipe: its quantizers (ptq_settings), calibrator and rounding, the rest from the
// sections: passes and BN folding (quantization), batch size and histogram bins (calibration), device.
RecipeSettings recipe_settings(const QuantizationSettings& quantization, const CalibrationSettings& calibration,
                               c10::Device device, PtqSettings ptq, const PluginChoice& calibrator,
                               const PluginChoice& rounding, std::uint64_t seed);
// Preprocessed calibration `images` as the recipe reads them (`pre`: the range of the model input).
CalibrationData calibration_data(CalibrationImages images, const Preprocess& pre, StatisticsCache* statistics);

}  // namespace xdq
