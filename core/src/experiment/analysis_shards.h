#pragma once
// What an analysis job keeps (private to the experiment module): a SettingAnalysis as JSON that reads
// back to the same values bit for bit (doubles written with 17 digits, infinities and NaN spelled out),
// for the job's shard and for the checkpoints between its phases.
#include <nlohmann/json.hpp>

#include "xdq/experiment/analysis_results.h"

namespace xdq {

nlohmann::json setting_json(const SettingAnalysis& a);

// `entry`, `bits` and `settings` are the job's own (not stored).
SettingAnalysis setting_from_json(const nlohmann::json& j, const ModelEntry& entry, const BitSetting& bits,
                                  const PtqSettings& settings);

}  // namespace xdq
