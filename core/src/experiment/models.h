#pragma once
// The experiment's models as every part of a run reads them (private to the experiment module): imported
// on the experiment's device and layout, with their input geometry and normalization.
#include <iosfwd>
#include <string>

#include "xdq/data/geometry.h"
#include "xdq/experiment/config.h"
#include "xdq/ir/import.h"

namespace xdq {

// The model at `path` on the experiment's device, in its memory_format (auto: channels_last_pays).
ImportedModel import_for_experiment(const ExecutionSettings& execution, const std::string& path);
// A warning on `progress` when the experiment asks for Winograd convolutions and this CPU has no oneDNN
// kernels for them: every convolution then runs direct, as the results will show.
void warn_if_convolutions_stay_direct(const ExecutionSettings& execution, std::ostream& progress);

// The entry's input geometry with the channels the first layer reads; the size the model file declares
// (input_size attribute) unless the entry declares one, and then they must agree.
InputShape model_input_shape(const ModelEntry& entry, const ImportedModel& model);
// The entry's declared normalization, else the model file's own, else none ([0, 1] images).
Preprocess model_preprocess(const ModelEntry& entry, const ImportedModel& model);

}  // namespace xdq
