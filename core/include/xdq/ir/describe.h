#pragma once
// The text `xdq inspect MODEL.pt` prints: layers, conv-BN pairs, residual blocks, merges, parameters.
#include <string>

#include "xdq/ir/import.h"

namespace xdq {
std::string describe_model(const ImportedModel& model);
}  // namespace xdq
