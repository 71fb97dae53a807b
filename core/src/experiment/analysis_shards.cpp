#include "analysis_shards.h"

#include <cmath>
#include <limits>

namespace xdq {

namespace {

// JSON has no infinities or NaN (a layer quantized without error has an infinite SQNR): they are written
// as {"nonfinite": "inf" | "-inf" | "nan"} and read back, in any position of a document.
nlohmann::json encoded(nlohmann::json j) {
  if (j.is_number_float() && !std::isfinite(j.get<double>())) {
    const double v = j.get<double>();
    return {{"nonfinite", std::isnan(v) ? "nan" : v > 0 ? "inf" : "-inf"}};
  }
  if (j.is_structured())
    for (auto& item : j) item = encoded(item);
  return j;
}

nlohmann::json decoded(nlohmann::json j) {
  if (j.is_object() && j.size() == 1 && j.contains("nonfinite")) {
    const std::string v = j["nonfinite"];
    return v == "nan" ? std::numeric_limits<double>::quiet_NaN()
                      : (v == "inf" ? 1 : -1) * std::numeric_limits<double>::infinity();
  }
  if (j.is_structured())
    for (auto& item : j) item = decoded(item);
  return j;
}

nlohmann::json error_json(const OutputError& e) {
  return {e.signal, e.noise, e.cosine_sum, e.squared_error_sum, e.samples, e.elements, e.fp_correct, e.quant_correct};
}

OutputError error_from_json(const nlohmann::json& j) {
  OutputError e;
  e.signal = j.at(0);
  e.noise = j.at(1);
  e.cosine_sum = j.at(2);
  e.squared_error_sum = j.at(3);
  e.samples = j.at(4);
  e.elements = j.at(5);
  e.fp_correct = j.at(6);
  e.quant_correct = j.at(7);
  return e;
}

nlohmann::json point_json(const ParetoPoint& p) {
  return {{"size_bytes", p.size_bytes}, {"quant_top1", p.quant_top1}, {"bits", p.bits}, {"raised", p.raised}};
}

ParetoPoint point_from_json(const nlohmann::json& j) {
  return {j.at("size_bytes"), j.at("quant_top1"), j.at("bits").get<std::map<std::string, int>>(), j.at("raised")};
}

std::vector<ParetoPoint> points_from_json(const nlohmann::json& list) {
  std::vector<ParetoPoint> out;
  for (const auto& p : list) out.push_back(point_from_json(p));
  return out;
}

}  // namespace

nlohmann::json setting_json(const SettingAnalysis& a) {
  nlohmann::json j;
  j["tag"] = a.tag;
  j["rows"] = nlohmann::json::array();
  for (const LayerRow& r : a.rows)
    j["rows"].push_back({{"name", r.name}, {"op", r.op}, {"error", error_json(r.error)}, {"graph_sqnr_db", r.graph_sqnr_db},
                         {"folded", {r.folded.channel_range_ratio, r.folded.kurtosis}},
                         {"unfolded", {r.unfolded.channel_range_ratio, r.unfolded.kurtosis}},
                         {"activation_outlier", r.activation_outlier}, {"flags", r.flags}});
  j["order"] = a.order;
  j["merges"] = nlohmann::json::array();
  for (const MergeStats& m : a.merges)
    j["merges"].push_back({{"node", m.node}, {"name", m.name}, {"op", m.op}, {"inputs", m.inputs}, {"ranges", m.ranges},
                           {"range_ratio", m.range_ratio}, {"own_sqnr_db", m.own_sqnr_db}, {"shared_sqnr_db", m.shared_sqnr_db}});
  j["cross"] = a.cross;
  j["steps"] = nlohmann::json::array();
  for (const auto& p : a.steps) j["steps"].push_back(point_json(p));
  j["pareto"] = nlohmann::json::array();
  for (const auto& p : a.pareto) j["pareto"].push_back(point_json(p));
  if (a.chosen) j["chosen"] = point_json(*a.chosen);
  j["fp32_top1"] = a.fp32_top1;
  j["fp32_bytes"] = a.fp32_bytes;
  j["images"] = a.images;
  return encoded(j);
}

SettingAnalysis setting_from_json(const nlohmann::json& stored, const ModelEntry& entry, const BitSetting& bits,
                                  const PtqSettings& settings) {
  const nlohmann::json j = decoded(stored);
  SettingAnalysis a;
  a.tag = j.at("tag");
  a.entry = &entry;
  a.bits = &bits;
  a.settings = settings;
  for (const auto& r : j.at("rows")) {
    LayerRow row;
    row.name = r.at("name");
    row.op = r.at("op");
    row.error = error_from_json(r.at("error"));
    row.graph_sqnr_db = r.at("graph_sqnr_db");
    row.folded = {r.at("folded").at(0), r.at("folded").at(1)};
    row.unfolded = {r.at("unfolded").at(0), r.at("unfolded").at(1)};
    row.activation_outlier = r.at("activation_outlier");
    row.flags = r.at("flags").get<std::vector<std::string>>();
    a.rows.push_back(row);
  }
  a.order = j.at("order").get<std::vector<std::size_t>>();
  for (const auto& m : j.at("merges"))
    a.merges.push_back({m.at("node"), m.at("name"), m.at("op"), m.at("inputs").get<std::vector<std::string>>(),
                        m.at("ranges").get<std::vector<double>>(), m.at("range_ratio"), m.at("own_sqnr_db"),
                        m.at("shared_sqnr_db")});
  a.cross = j.at("cross");
  a.steps = points_from_json(j.at("steps"));
  a.pareto = points_from_json(j.at("pareto"));
  if (j.contains("chosen")) a.chosen = point_from_json(j.at("chosen"));
  a.fp32_top1 = j.at("fp32_top1");
  a.fp32_bytes = j.at("fp32_bytes");
  a.images = j.at("images");
  return a;
}

}  // namespace xdq
