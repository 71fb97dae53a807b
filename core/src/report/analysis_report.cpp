#include "xdq/report/analysis_report.h"

#include <algorithm>
#include <iomanip>
#include <sstream>

#include <yaml-cpp/yaml.h>

#include "xdq/report/png.h"
#include "xdq/report/results_tables.h"

namespace xdq {

namespace {

std::string fixed(double v, int digits) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

nlohmann::json pareto_json(const ParetoPoint& pt) {
  return {{"size_bytes", pt.size_bytes}, {"quant_top1", pt.quant_top1}, {"bits", pt.bits}, {"raised", pt.raised}};
}

// What every setting of an analysis shares: its options, the calibration domain of its ranges and the
// test domain its layers are measured on (the first of each).
struct AnalysisScope {
  const AnalysisSettings& options;
  std::string calibration, test;
};

std::string analysis_json(const AnalysisScope& scope, const SettingAnalysis& a) {
  nlohmann::json j;
  j["model"] = a.entry->name;
  j["bits"] = a.bits->label();
  j["calibration"] = scope.calibration;
  j["test"] = scope.test;
  j["images"] = a.images;
  j["layerwise"] = scope.options.layerwise;
  j["fp32_top1"] = a.fp32_top1;
  j["fp32_size_bytes"] = a.fp32_bytes;
  for (const auto& r : a.rows)
    j["layers"].push_back({{"name", r.name},
                           {"op", r.op},
                           {"sqnr_db", r.error.sqnr_db()},
                           {"cosine", r.error.cosine()},
                           {"mse", r.error.mse()},
                           {"top1_drop", r.error.top1_drop()},
                           {"graph_sqnr_db", r.graph_sqnr_db},
                           {"channel_range_ratio", r.folded.channel_range_ratio},
                           {"channel_range_ratio_unfolded", r.unfolded.channel_range_ratio},
                           {"kurtosis", r.folded.kurtosis},
                           {"activation_outlier_ratio", r.activation_outlier},
                           {"flags", r.flags}});
  for (const auto& pt : a.pareto) j["pareto"].push_back(pareto_json(pt));
  for (const auto& pt : a.steps)
    j["search"].push_back({{"size_bytes", pt.size_bytes}, {"quant_top1", pt.quant_top1}, {"raised", pt.raised}});
  if (a.chosen) j["chosen"] = pareto_json(*a.chosen);
  for (const auto& m : a.merges)
    j["merges"].push_back({{"name", m.name}, {"op", m.op}, {"inputs", m.inputs}, {"ranges", m.ranges},
                           {"range_ratio", m.range_ratio}, {"own_sqnr_db", m.own_sqnr_db}, {"shared_sqnr_db", m.shared_sqnr_db}});
  j["cross_domain"] = a.cross;
  return j.dump(2) + "\n";
}

// The chosen assignment as overrides an experiment includes.
std::string mixed_precision_yaml(int fallback_bits, const SettingAnalysis& a) {
  YAML::Emitter y;
  y << YAML::BeginMap << YAML::Key << "overrides" << YAML::Value << YAML::BeginSeq;
  std::map<int, std::vector<std::string>> by_bits;
  for (const auto& [name, b] : a.chosen->bits) by_bits[b].push_back(name);
  for (const auto& [b, names] : by_bits) {
    y << YAML::Flow << YAML::BeginMap << YAML::Key << "layers" << YAML::Value << YAML::Flow << names;
    y << YAML::Key << "w_bits" << YAML::Value << b << YAML::Key << "a_bits" << YAML::Value
      << (b == a.settings.w_bits ? a.settings.a_bits : fallback_bits) << YAML::EndMap;
  }
  y << YAML::EndSeq << YAML::EndMap;
  return "# xdq analyze: " + a.entry->name + " " + a.bits->label() + ", top-1 " + fixed(100 * a.chosen->quant_top1, 2) +
         " % at " + std::to_string(a.chosen->size_bytes) + " weight bytes.\n# Use with: " +
         "quantization.overrides: [{include: <this file>}]\n" + y.c_str() + "\n";
}

void layer_table_markdown(const SettingAnalysis& a, std::ostream& report) {
  report << "| rank | layer | op | SQNR (dB) | cosine | top-1 drop (pt) | graphwise SQNR (dB) | ch. range ratio (unfolded) | kurtosis | act. max/p99.99 | flags |\n"
         << "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n";
  for (std::size_t k = 0; k < a.order.size(); ++k) {
    const LayerRow& r = a.rows[a.order[k]];
    std::string flags;
    for (const auto& f : r.flags) flags += (flags.empty() ? "" : ", ") + f;
    report << "| " << k + 1 << " | " << r.name << " | " << r.op << " | " << fixed(r.error.sqnr_db(), 1) << " | "
           << fixed(r.error.cosine(), 4) << " | " << fixed(r.error.top1_drop(), 2) << " | " << fixed(r.graph_sqnr_db, 1)
           << " | " << fixed(r.folded.channel_range_ratio, 1) << " (" << fixed(r.unfolded.channel_range_ratio, 1) << ") | "
           << fixed(r.folded.kurtosis, 1) << " | " << fixed(r.activation_outlier, 2) << " | " << flags << " |\n";
  }
}

void merges_and_cross_domain_markdown(const SettingAnalysis& a, std::ostream& report) {
  if (!a.merges.empty()) {
    report << "\nMerges (inputs' ranges on the calibration images; SQNR of the worst input at a" << a.bits->a_bits
           << " on its own range vs on the shared range):\n\n| merge | op | range ratio | own SQNR (dB) | shared SQNR (dB) |\n"
           << "|---|---|---:|---:|---:|\n";
    for (const auto& m : a.merges)
      report << "| " << m.name << " | " << m.op << " | " << fixed(m.range_ratio, 2) << " | " << fixed(m.own_sqnr_db, 1)
             << " | " << fixed(m.shared_sqnr_db, 1) << " |\n";
  }
  if (a.cross.size() <= 1) return;
  report << "\nCross-domain (ranges from A, measured on B): quantized top-1 and the three layers whose SQNR falls "
            "most against ranges calibrated on B itself.\n\n| A | B | quant top-1 | most shift-sensitive layers (dB) |\n|---|---|---:|---|\n";
  for (const auto& c : a.cross) {
    std::vector<std::pair<double, std::string>> shifts;
    for (const auto& l : c["layers"])
      if (l.contains("shift_db")) shifts.emplace_back(l["shift_db"].get<double>(), l["name"].get<std::string>());
    std::sort(shifts.begin(), shifts.end());
    std::string names;
    for (std::size_t k = 0; k < std::min<std::size_t>(3, shifts.size()); ++k)
      names += (k ? ", " : "") + shifts[k].second + " (" + fixed(shifts[k].first, 1) + ")";
    report << "| " << c["calibration"].get<std::string>() << " | " << c["test"].get<std::string>() << " | "
           << fixed(100 * c["quant_top1"].get<double>(), 2) << " % | " << (names.empty() ? "(in-domain)" : names) << " |\n";
  }
}

void charts(const SettingAnalysis& a, std::ostream& report, std::map<std::string, std::string>& files) {
  if (!image_output_available()) return;
  std::vector<std::string> names;
  std::vector<std::vector<double>> bars(2);
  for (const auto& r : a.rows) {
    names.push_back(r.name);
    bars[0].push_back(r.error.sqnr_db());
    bars[1].push_back(r.graph_sqnr_db);
  }
  files[a.tag + "/sqnr.png"] =
      render_bars_png(a.tag + ": SQNR (dB) per layer", names, {"layerwise (output)", "graphwise (layer output)"}, bars);
  std::vector<std::pair<double, double>> curve;
  for (const auto& pt : a.pareto) curve.emplace_back(static_cast<double>(pt.size_bytes), 100 * pt.quant_top1);
  files[a.tag + "/pareto.png"] =
      render_curves_png(a.tag + ": top-1 (%) vs weight bytes, Pareto front", {"mixed precision"}, {curve}, false);
  report << "![sqnr](" << a.tag << "/sqnr.png) ![pareto](" << a.tag << "/pareto.png)\n\n";
}

void render(const AnalysisScope& scope, const SettingAnalysis& a, std::ostream& report,
            std::map<std::string, std::string>& files) {
  files[a.tag + "/analysis.json"] = analysis_json(scope, a);
  if (a.chosen) files[a.tag + "/mixed_precision.yaml"] = mixed_precision_yaml(scope.options.fallback_bits, a);
  report << "## " << a.entry->name << " " << a.bits->label() << "\n\n"
         << "FP32 top-1 " << fixed(100 * a.fp32_top1, 2) << " % on " << a.images << " images of `"
         << scope.test << "`; ranges from `" << scope.calibration << "`.\n\n";
  layer_table_markdown(a, report);
  merges_and_cross_domain_markdown(a, report);
  report << "\nMixed precision (" << scope.options.fallback_bits << "-bit fallback):\n\n| configuration | weight bytes | top-1 |\n|---|---:|---:|\n"
         << "| all " << a.bits->label() << " (first/last per overrides) | " << a.steps.front().size_bytes << " | "
         << fixed(100 * a.steps.front().quant_top1, 2) << " % |\n";
  if (a.chosen)
    report << "| chosen: " << a.chosen->raised << " most sensitive layer(s) raised | " << a.chosen->size_bytes << " | "
           << fixed(100 * a.chosen->quant_top1, 2) << " % |\n";
  report << "| FP32 | " << a.fp32_bytes << " | " << fixed(100 * a.fp32_top1, 2) << " % |\n\n";
  charts(a, report, files);
}


}  // namespace

namespace {
// analysis.csv: every layer of every model and bit setting, one row each, ranked by layerwise SQNR.
std::string analysis_csv(const AnalysisRun& run) {
  std::ostringstream out;
  out << "model,bits,rank,layer,op,sqnr_db,cosine,mse,top1_drop,graph_sqnr_db,channel_range_ratio,"
         "channel_range_ratio_unfolded,kurtosis,activation_outlier_ratio,flags\n"
      << std::setprecision(8);
  for (const SettingAnalysis& a : run.settings)
    for (std::size_t k = 0; k < a.order.size(); ++k) {
      const LayerRow& r = a.rows[a.order[k]];
      std::string flags;
      for (const auto& f : r.flags) flags += (flags.empty() ? "" : "+") + f;
      out << csv_field(a.entry->name) << "," << a.bits->label() << "," << k + 1 << "," << csv_field(r.name) << ","
          << csv_field(r.op) << "," << r.error.sqnr_db() << "," << r.error.cosine() << "," << r.error.mse() << ","
          << r.error.top1_drop() << "," << r.graph_sqnr_db << "," << r.folded.channel_range_ratio << ","
          << r.unfolded.channel_range_ratio << "," << r.folded.kurtosis << "," << r.activation_outlier << "," << flags << "\n";
    }
  return out.str();
}
}  // namespace

std::map<std::string, std::string> analysis_report(const AnalysisRun& run) {
  std::map<std::string, std::string> files;
  files["analysis.csv"] = analysis_csv(run);
  const AnalysisSettings& opt = run.options;
  const ResultsSource& source = run.source;
  std::ostringstream report;
  report << "# " << source.experiment << ": outlier-layer analysis\n\nSource: `" << source.file << "`; preset `" << source.preset
         << "`, calibrator `" << source.calibrator << "`, weight ranges `" << source.weight_range
         << "`, nearest rounding, seed " << source.seed << ", " << run.threads << " threads. Layerwise: one layer's "
         << opt.layerwise << " quantized, everything else FP32, error at the network output over " << opt.images
         << " held-out images; graphwise: the whole model quantized, SQNR of each layer's output. Mixed precision "
         << "raises the most sensitive layers to " << opt.fallback_bits << " bit until the top-1 drop is at most "
         << opt.target_drop << " points"
         << (opt.size_budget ? " within " + std::to_string(opt.size_budget) + " bytes" : std::string())
         << ". Sizes count conv/linear weights.\n\n";
  const AnalysisScope scope{opt, source.calibration_domain, source.test_domain};
  for (const SettingAnalysis& a : run.settings) render(scope, a, report, files);
  if (!run.missing_jobs.empty()) {
    report << "Missing (no shard yet):";
    for (const auto& id : run.missing_jobs) report << " `" << id << "`";
    report << "\n";
  }
  files["analysis.md"] = report.str();
  return files;
}

}  // namespace xdq
