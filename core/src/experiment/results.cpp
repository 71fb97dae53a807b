#include "xdq/experiment/results.h"

#include <nlohmann/json.hpp>

#include <algorithm>

#include "xdq/statistics.h"

namespace xdq {

std::size_t ExperimentResults::failed_runs() const {
  return static_cast<std::size_t>(std::count_if(runs.begin(), runs.end(), [](const RunResult& r) { return r.failed(); }));
}

nlohmann::json export_json(const ExportRecord& e) {
  nlohmann::json gaps = nlohmann::json::array();
  for (const auto& g : e.layer_gaps)
    gaps.push_back({{"activation", g.activation}, {"differing", g.differing}, {"max_steps", g.max_steps}});
  nlohmann::json timings = nlohmann::json::array();
  for (const auto& t : e.timings)
    timings.push_back({{"batch", t.batch}, {"threads", t.threads}, {"float_ms", t.float_ms}, {"int8_ms", t.int8_ms}});
  nlohmann::json out = {{"dir", e.dir}, {"files", e.files}, {"runtime", e.runtime}, {"int8_layers", e.int8_layers},
                        {"layers", e.layers}, {"error", e.error}, {"runtime_error", e.runtime_error}, {"layer_gaps", gaps}};
  if (!e.timings.empty()) out["timings"] = timings;  // results without timing keep their bytes
  return out;
}

ExportRecord export_from_json(const nlohmann::json& j) {
  ExportRecord e;
  if (!j.is_object()) return e;
  e.dir = j.value("dir", "");
  e.files = j.value("files", std::vector<std::string>{});
  e.runtime = j.value("runtime", "");
  e.int8_layers = j.value("int8_layers", 0);
  e.layers = j.value("layers", 0);
  e.error = j.value("error", "");
  e.runtime_error = j.value("runtime_error", "");
  for (const auto& g : j.value("layer_gaps", nlohmann::json::array()))
    e.layer_gaps.push_back({g.at("activation"), g.at("differing"), g.at("max_steps")});
  for (const auto& t : j.value("timings", nlohmann::json::array()))
    e.timings.push_back({t.at("batch"), t.at("threads"), t.at("float_ms"), t.at("int8_ms")});
  return e;
}

nlohmann::json selection_json(const SelectionRecord& s) {
  return {{"selector", s.selector}, {"options", s.options}, {"passes", s.passes}, {"pool_size", s.pool_size},
          {"target", s.target}, {"composition", s.composition}, {"measures", s.measures}, {"seconds", s.seconds}};
}

SelectionRecord selection_from_json(const nlohmann::json& j) {
  SelectionRecord s;
  if (!j.is_object()) return s;
  s.selector = j.value("selector", "");
  s.options = j.value("options", std::map<std::string, std::string>{});
  s.passes = j.value("passes", 0);
  s.pool_size = j.value("pool_size", std::int64_t{0});
  s.target = j.value("target", "");
  s.composition = j.value("composition", std::map<std::string, std::int64_t>{});
  s.measures = j.value("measures", std::map<std::string, double>{});
  s.seconds = j.value("seconds", 0.0);
  return s;
}

void add_cell_details_json(const DomainResult& d, nlohmann::json& j) {
  if (d.has_runtime()) {
    j["runtime_top1"] = d.runtime_top1;
    j["runtime_disagreements"] = d.runtime_disagreements;
  }
  if (!d.correct.empty()) j["correct"] = pack_bits(d.correct);
  if (!d.scores.empty()) j["scores"] = d.scores;
}

void read_cell_details_json(const nlohmann::json& j, DomainResult& d) {
  d.runtime_top1 = j.value("runtime_top1", -1.0);
  d.runtime_disagreements = j.value("runtime_disagreements", std::int64_t{-1});
  if (j.contains("correct")) d.correct = unpack_bits(j.at("correct").get<std::string>(), d.n);
  d.scores = j.value("scores", std::map<std::string, double>{});
}

}  // namespace xdq
