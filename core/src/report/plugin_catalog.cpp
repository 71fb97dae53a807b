#include "xdq/report/plugin_catalog.h"

#include <nlohmann/json.hpp>

namespace xdq {

std::string plugin_catalog_json(const PluginRegistry& registry, const std::vector<std::string>& failures) {
  nlohmann::ordered_json out;
  out["plugins"] = nlohmann::ordered_json::array();
  for (const auto& r : registry.records()) {
    nlohmann::ordered_json p;
    p["kind"] = to_string(r.kind);
    p["name"] = r.name;
    p["version"] = r.version;
    p["path"] = r.path;
    p["summary"] = r.summary;
    p["options"] = nlohmann::ordered_json::array();
    for (const auto& o : r.options) {
      nlohmann::ordered_json j;
      j["name"] = o.name;
      j["type"] = to_string(o.type);
      j["default"] = to_string(o.default_value);
      const std::string range = o.range_text();
      if (!range.empty()) j["range"] = range;
      j["doc"] = o.doc;
      p["options"].push_back(j);
    }
    out["plugins"].push_back(p);
  }
  out["errors"] = failures;
  return out.dump(2);
}

}  // namespace xdq
