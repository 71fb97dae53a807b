#pragma once
// The plugins found, as JSON (`xdq plugins --json`, Python's xdq.plugins()): kind, name, version, library
// path, summary, options (type, default, range, doc), and the libraries that failed to load.
#include <string>
#include <vector>

#include "xdq/plugin/registry.h"

namespace xdq {

std::string plugin_catalog_json(const PluginRegistry& registry, const std::vector<std::string>& failures);

}  // namespace xdq
