#pragma once
// Loading an experiment: the key table's reading and checks (config.h), then what needs the plan (every
// export.runs selector names runs of it, with activation bits the export formats can hold).
#include <string>
#include <vector>

#include "xdq/experiment/config.h"

namespace xdq {

// Reads and validates `path` with `overrides` ("key.path=value") applied first. Loads the plugins
// (search path: plugins.paths, $XDQ_PLUGIN_PATH, the build's plugin folder) into `registry`.
ExperimentConfig load_experiment(const std::string& path, const std::vector<std::string>& overrides,
                                 PluginRegistry& registry);
// The same from YAML text (a config built in code, e.g. a Python dict): errors name `label`; relative
// paths start at `base_dir`.
ExperimentConfig load_experiment_text(const std::string& text, const std::string& label, const std::string& base_dir,
                                      const std::vector<std::string>& overrides, PluginRegistry& registry);

}  // namespace xdq
