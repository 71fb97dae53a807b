#include "xdq/experiment/analysis_runner.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <map>
#include <optional>
#include <ostream>
#include <sstream>

#include <ATen/core/grad_mode.h>
#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "prepare.h"
#include "xdq/analysis/analysis.h"
#include "xdq/data/image_files.h"
#include "xdq/error.h"
#include "xdq/experiment/results.h"
#include "xdq/ir/passes.h"
#include "xdq/parallel.h"

namespace xdq {

namespace {

// Flags: thresholds a practitioner would call an outlier on these grids.
constexpr double kChannelRangeRatio = 4;   // max / median per-channel weight range
constexpr double kFoldingGrowth = 2;       // ... and at least this much wider than before BN folding
constexpr double kKurtosis = 10;           // Gaussian: 3
constexpr double kActivationOutlier = 2;   // max |x| / p99.99 |x|
constexpr double kMergeRangeRatio = 4;     // widest / narrowest input range of an add or concat

struct LayerRow {
  std::string name, op;
  OutputError error;
  double graph_sqnr_db = 0;
  WeightStats folded, unfolded;
  double activation_outlier = 1;
  std::vector<std::string> flags;
};

struct ParetoPoint {
  std::int64_t size_bytes = 0;
  double quant_top1 = 0;
  std::map<std::string, int> bits;
  int raised = 0;  // how many of the most sensitive layers are at fallback bits
};

double top1(const QuantizedModel& model, const at::Tensor& images, const at::Tensor& labels, std::int64_t batch) {
  const Executor exec = model.executor();
  at::NoGradGuard no_grad;
  std::int64_t correct = 0;
  for (std::int64_t b = 0; b < images.size(0); b += batch) {
    const std::int64_t e = std::min(images.size(0), b + batch);
    correct += exec.forward(images.slice(0, b, e)).argmax(1).eq(labels.slice(0, b, e)).sum().item<std::int64_t>();
  }
  return static_cast<double>(correct) / static_cast<double>(images.size(0));
}

std::int64_t weight_bytes(const QuantizedModel& model, std::map<std::string, int>* bits) {
  double bytes = 0;
  for (const auto& layer : model.layers()) {
    const Node& n = model.graph().nodes[layer.node];
    bytes += static_cast<double>(n.weight.numel()) * layer.spec.bits / 8.0;
    if (bits) (*bits)[n.name] = layer.spec.bits;
  }
  return static_cast<std::int64_t>(std::ceil(bytes));
}

std::string fixed(double v, int digits) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

// The layer whose output reaches `value` through element-wise activations only, or -1.
int producing_layer(const Graph& g, int value) {
  for (int p = g.producer(value); p >= 0; p = g.producer(g.nodes[p].inputs[0])) {
    if (g.nodes[p].is_layer()) return p;
    if (!is_activation_op(g.nodes[p])) return -1;
  }
  return -1;
}

// Everything measured for one model at one bit setting; rendered into analysis.json, the report section,
// mixed_precision.yaml and two charts.
struct SettingAnalysis {
  std::string tag;  // <model>_<bits>
  const ModelEntry* entry = nullptr;
  const BitSetting* bits = nullptr;
  PtqSettings settings;
  std::vector<LayerRow> rows;
  std::vector<std::size_t> order;  // rows by layerwise SQNR, worst first
  std::vector<MergeStats> merges;
  nlohmann::json cross = nlohmann::json::array();
  std::vector<ParetoPoint> steps, pareto;
  std::optional<ParetoPoint> chosen;
  double fp32_top1 = 0;
  std::int64_t fp32_bytes = 0, images = 0;
};

// What one model's analysis reads: its folded graph, unfolded weights, calibration and test images.
struct ModelInputs {
  const ModelEntry* entry;
  const PreparedModel* prepared;
  Graph folded;
  std::map<std::string, at::Tensor> unfolded;  // weights by layer name, for the effect of folding
  std::vector<at::Tensor> calibration;         // per calibration domain, preprocessed
  std::vector<at::Tensor> test_images, test_labels;  // per test domain, at most analysis.images
};

class Analyzer {
 public:
  Analyzer(const ExperimentConfig& cfg, PluginRegistry& registry, StatisticsCache& statistics, std::ostream& progress)
      : cfg_(cfg), registry_(registry), statistics_(statistics), progress_(progress),
        mode_(parse_layerwise_mode(cfg.analysis.layerwise)) {}

  SettingAnalysis analyze(const ModelInputs& in, const BitSetting& bits) const;

 private:
  QuantizedModel nearest(const ModelInputs& in, const PtqSettings& settings, const at::Tensor& calibration) const {
    QuantizedModel q = calibrated_model(cfg_, in.folded, settings, cfg_.calibrators.front(), registry_, calibration,
                                        in.prepared->pre, statistics_, progress_);
    q.round_to_nearest();
    return q;
  }
  void measure_layers(const ModelInputs& in, const QuantizedModel& model, SettingAnalysis& a,
                      std::vector<OutputError>& errors) const;
  void flag_merges(const Graph& folded, SettingAnalysis& a) const;
  void cross_domain(const ModelInputs& in, const QuantizedModel& model, const std::vector<OutputError>& errors,
                    SettingAnalysis& a) const;
  void mixed_precision(const ModelInputs& in, SettingAnalysis& a) const;

  const ExperimentConfig& cfg_;
  PluginRegistry& registry_;
  StatisticsCache& statistics_;
  std::ostream& progress_;
  LayerwiseMode mode_;
};

// Per layer: the measurements, then the flags that name a cause; the ranking by output SQNR (continuous;
// the top-1 change of one layer is a few images either way).
void Analyzer::measure_layers(const ModelInputs& in, const QuantizedModel& model, SettingAnalysis& a,
                              std::vector<OutputError>& errors) const {
  const at::Tensor& images = in.test_images[0];
  errors = layerwise_errors(model, mode_, images, in.test_labels[0], cfg_.batch_size);
  const auto graph_sqnr = graphwise_sqnr(model, images, cfg_.batch_size);
  const auto outliers = activation_outlier_ratios(model, in.calibration[0], cfg_.batch_size);
  for (std::size_t l = 0; l < model.layers().size(); ++l) {
    const Node& n = in.folded.nodes[model.layers()[l].node];
    LayerRow r;
    r.name = n.name;
    r.op = n.is_depthwise() ? "conv2d (depthwise)" : n.op;
    r.error = errors[l];
    r.graph_sqnr_db = graph_sqnr[l];
    r.folded = weight_stats(n.weight);
    r.unfolded = weight_stats(in.unfolded.at(n.name));
    for (std::size_t act = 0; act < model.activations().size(); ++act)
      if (model.activations()[act].value == n.inputs[0]) r.activation_outlier = outliers[act];
    if (r.folded.channel_range_ratio >= kChannelRangeRatio) {
      const bool from_folding =
          n.folded_bn.gamma.defined() && r.folded.channel_range_ratio >= kFoldingGrowth * r.unfolded.channel_range_ratio;
      r.flags.push_back(from_folding ? "bn_folding_outliers" : "wide_channel_ranges");
    }
    if (r.folded.kurtosis >= kKurtosis) r.flags.push_back("heavy_tailed_weights");
    if (r.activation_outlier >= kActivationOutlier) r.flags.push_back("activation_outliers");
    a.rows.push_back(r);
  }
  a.merges = merge_stats(in.folded, in.calibration[0], a.bits->a_bits, cfg_.batch_size);
  flag_merges(in.folded, a);
  a.order.resize(a.rows.size());
  for (std::size_t i = 0; i < a.order.size(); ++i) a.order[i] = i;
  std::stable_sort(a.order.begin(), a.order.end(),
                   [&](std::size_t x, std::size_t y) { return a.rows[x].error.sqnr_db() < a.rows[y].error.sqnr_db(); });
  for (std::size_t k = 0; k < std::min<std::size_t>(3, a.order.size()); ++k) a.rows[a.order[k]].flags.push_back("most_sensitive");
}

// The layers feeding a merge whose inputs' ranges differ widely.
void Analyzer::flag_merges(const Graph& folded, SettingAnalysis& a) const {
  for (const MergeStats& m : a.merges) {
    if (m.range_ratio < kMergeRangeRatio) continue;
    const Node& merge = folded.nodes[m.node];
    std::vector<int> branches = {merge.inputs[0], merge.inputs[1]};
    if (merge.op == "aten::cat") branches = folded.nodes[folded.producer(merge.inputs[0])].inputs;
    for (int v : branches) {
      const int layer = producing_layer(folded, v);
      for (auto& r : a.rows)
        if (layer >= 0 && r.name == folded.nodes[layer].name &&
            std::find(r.flags.begin(), r.flags.end(), "merge_range_mismatch") == r.flags.end())
          r.flags.push_back("merge_range_mismatch");
    }
  }
}

// Ranges from each calibration domain A, layerwise SQNR (and the shift against ranges from B) on each B.
void Analyzer::cross_domain(const ModelInputs& in, const QuantizedModel& model, const std::vector<OutputError>& errors,
                            SettingAnalysis& a) const {
  progress_ << "analysis " << a.tag << ": cross-domain layerwise\n" << std::flush;
  std::map<std::pair<std::string, std::string>, std::vector<double>> sqnr_ab;
  std::map<std::pair<std::string, std::string>, double> top1_ab;
  for (std::size_t c = 0; c < cfg_.calibration_domains.size(); ++c) {
    const QuantizedModel qa = c == 0 ? model : nearest(in, a.settings, in.calibration[c]);
    for (std::size_t t = 0; t < cfg_.test_domains.size(); ++t) {
      const auto errs = c == 0 && t == 0 ? errors
                                         : layerwise_errors(qa, mode_, in.test_images[t], in.test_labels[t], cfg_.batch_size);
      const auto key = std::make_pair(cfg_.calibration_domains[c].name, cfg_.test_domains[t].name);
      for (const auto& e : errs) sqnr_ab[key].push_back(e.sqnr_db());
      top1_ab[key] = top1(qa, in.test_images[t], in.test_labels[t], cfg_.batch_size);
    }
  }
  for (const auto& [key, values] : sqnr_ab) {
    nlohmann::json c{{"calibration", key.first}, {"test", key.second}, {"quant_top1", top1_ab[key]}};
    const auto in_domain = sqnr_ab.find({key.second, key.second});
    for (std::size_t l = 0; l < values.size(); ++l) {
      nlohmann::json lj{{"name", a.rows[l].name}, {"sqnr_db", values[l]}};
      if (in_domain != sqnr_ab.end() && key.first != key.second) lj["shift_db"] = values[l] - in_domain->second[l];
      c["layers"].push_back(lj);
    }
    a.cross.push_back(c);
  }
}

// The k most sensitive layers raised to the fallback bits, k = 0 .. all; the Pareto front; the first
// point within the target drop (and size budget), else the most accurate within the budget.
void Analyzer::mixed_precision(const ModelInputs& in, SettingAnalysis& a) const {
  const auto& opt = cfg_.analysis;
  progress_ << "analysis " << a.tag << ": mixed-precision search over " << a.order.size() << " layers\n" << std::flush;
  for (std::size_t k = 0; k <= a.order.size(); ++k) {
    PtqSettings mixed = a.settings;
    if (k > 0) {
      LayerOverride raise;
      for (std::size_t i = 0; i < k; ++i) raise.layers.push_back(a.rows[a.order[i]].name);
      raise.w_bits = raise.a_bits = opt.fallback_bits;
      mixed.overrides.push_back(raise);
    }
    const QuantizedModel q = nearest(in, mixed, in.calibration[0]);
    ParetoPoint pt;
    pt.raised = static_cast<int>(k);
    pt.size_bytes = weight_bytes(q, &pt.bits);
    pt.quant_top1 = top1(q, in.test_images[0], in.test_labels[0], cfg_.batch_size);
    a.steps.push_back(pt);
  }
  std::vector<ParetoPoint> by_size = a.steps;
  std::stable_sort(by_size.begin(), by_size.end(), [](const auto& x, const auto& y) { return x.size_bytes < y.size_bytes; });
  for (const auto& pt : by_size)
    if (a.pareto.empty() || pt.quant_top1 > a.pareto.back().quant_top1) a.pareto.push_back(pt);
  const auto fits = [&](const ParetoPoint& pt) { return opt.size_budget == 0 || pt.size_bytes <= opt.size_budget; };
  for (const auto& pt : a.steps)
    if (fits(pt) && 100 * (a.fp32_top1 - pt.quant_top1) <= opt.target_drop) {
      a.chosen = pt;
      return;
    }
  for (const auto& pt : a.steps)  // target not reached: the most accurate point within the budget
    if (fits(pt) && (!a.chosen || pt.quant_top1 > a.chosen->quant_top1)) a.chosen = pt;
}

SettingAnalysis Analyzer::analyze(const ModelInputs& in, const BitSetting& bits) const {
  SettingAnalysis a;
  a.entry = in.entry;
  a.bits = &bits;
  a.tag = in.entry->name + "_" + bits.label();
  a.settings = ptq_settings(cfg_, bits);
  progress_ << "analysis " << a.tag << ": layerwise, graphwise, weights, merges, activations\n" << std::flush;
  const QuantizedModel model = nearest(in, a.settings, in.calibration[0]);
  std::vector<OutputError> errors;
  measure_layers(in, model, a, errors);
  cross_domain(in, model, errors, a);
  a.images = in.test_images[0].size(0);
  a.fp32_top1 = static_cast<double>(errors.empty() ? 0 : errors[0].fp_correct) / static_cast<double>(a.images);
  mixed_precision(in, a);
  for (const auto& layer : model.layers()) a.fp32_bytes += 4 * in.folded.nodes[layer.node].weight.numel();
  return a;
}

ModelInputs model_inputs(const ExperimentConfig& cfg, const ModelEntry& entry, const PreparedModel& p,
                         DomainCache& domains) {
  ModelInputs in{&entry, &p, p.model.graph, {}, {}, {}, {}};
  if (cfg.fold_bn) fold_batch_norm(in.folded);
  for (const Node& n : p.model.graph.nodes)
    if (n.is_layer()) in.unfolded[n.name] = n.weight;
  for (const DomainSpec& d : cfg.calibration_domains)
    in.calibration.push_back(
        p.pre.apply(domains.get(d, Split::Train, p.shape, cfg.calibration_counts.front(), cfg.seed, &entry).images));
  for (const Dataset* t : p.tests) {
    const std::int64_t n = std::min(cfg.analysis.images, t->size());
    in.test_images.push_back(p.pre.apply(t->images.slice(0, 0, n)));
    in.test_labels.push_back(t->labels.slice(0, 0, n));
  }
  return in;
}

// ---- Rendering: analysis.json, mixed_precision.yaml, the report section and the charts.
nlohmann::json pareto_json(const ParetoPoint& pt) {
  return {{"size_bytes", pt.size_bytes}, {"quant_top1", pt.quant_top1}, {"bits", pt.bits}, {"raised", pt.raised}};
}

std::string analysis_json(const ExperimentConfig& cfg, const SettingAnalysis& a) {
  nlohmann::json j;
  j["model"] = a.entry->name;
  j["bits"] = a.bits->label();
  j["calibration"] = cfg.calibration_domains[0].name;
  j["test"] = cfg.test_domains[0].name;
  j["images"] = a.images;
  j["layerwise"] = cfg.analysis.layerwise;
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
std::string mixed_precision_yaml(const ExperimentConfig& cfg, const SettingAnalysis& a) {
  YAML::Emitter y;
  y << YAML::BeginMap << YAML::Key << "overrides" << YAML::Value << YAML::BeginSeq;
  std::map<int, std::vector<std::string>> by_bits;
  for (const auto& [name, b] : a.chosen->bits) by_bits[b].push_back(name);
  for (const auto& [b, names] : by_bits) {
    y << YAML::Flow << YAML::BeginMap << YAML::Key << "layers" << YAML::Value << YAML::Flow << names;
    y << YAML::Key << "w_bits" << YAML::Value << b << YAML::Key << "a_bits" << YAML::Value
      << (b == a.settings.w_bits ? a.settings.a_bits : cfg.analysis.fallback_bits) << YAML::EndMap;
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

void render(const ExperimentConfig& cfg, const SettingAnalysis& a, std::ostream& report,
            std::map<std::string, std::string>& files) {
  files[a.tag + "/analysis.json"] = analysis_json(cfg, a);
  if (a.chosen) files[a.tag + "/mixed_precision.yaml"] = mixed_precision_yaml(cfg, a);
  report << "## " << a.entry->name << " " << a.bits->label() << "\n\n"
         << "FP32 top-1 " << fixed(100 * a.fp32_top1, 2) << " % on " << a.images << " images of `"
         << cfg.test_domains[0].name << "`; ranges from `" << cfg.calibration_domains[0].name << "`.\n\n";
  layer_table_markdown(a, report);
  merges_and_cross_domain_markdown(a, report);
  report << "\nMixed precision (" << cfg.analysis.fallback_bits << "-bit fallback):\n\n| configuration | weight bytes | top-1 |\n|---|---:|---:|\n"
         << "| all " << a.bits->label() << " (first/last per overrides) | " << a.steps.front().size_bytes << " | "
         << fixed(100 * a.steps.front().quant_top1, 2) << " % |\n";
  if (a.chosen)
    report << "| chosen: " << a.chosen->raised << " most sensitive layer(s) raised | " << a.chosen->size_bytes << " | "
           << fixed(100 * a.chosen->quant_top1, 2) << " % |\n";
  report << "| FP32 | " << a.fp32_bytes << " | " << fixed(100 * a.fp32_top1, 2) << " % |\n\n";
  charts(a, report, files);
}

std::string report_header(const ExperimentConfig& cfg, int threads) {
  const auto& opt = cfg.analysis;
  std::ostringstream report;
  report << "# " << cfg.name << ": outlier-layer analysis\n\nSource: `" << cfg.file << "`; preset `" << cfg.preset
         << "`, calibrator `" << cfg.calibrators.front().label << "`, weight ranges `" << cfg.weight_range
         << "`, nearest rounding, seed " << cfg.seed << ", " << threads << " threads. Layerwise: one layer's "
         << opt.layerwise << " quantized, everything else FP32, error at the network output over " << opt.images
         << " held-out images; graphwise: the whole model quantized, SQNR of each layer's output. Mixed precision "
         << "raises the most sensitive layers to " << opt.fallback_bits << " bit until the top-1 drop is at most "
         << opt.target_drop << " points"
         << (opt.size_budget ? " within " + std::to_string(opt.size_budget) + " bytes" : std::string())
         << ". Sizes count conv/linear weights.\n\n";
  return report.str();
}

}  // namespace

void run_analysis_to(const ExperimentConfig& cfg, PluginRegistry& registry, const std::string& out_dir,
                     std::ostream& progress) {
  const int threads = apply_thread_count(cfg.threads);
  DomainCache domains(cfg, registry, progress);
  StatisticsCache statistics(cache_directory(cfg.data));
  std::vector<PreparedModel> prepared;
  for (const ModelEntry& entry : cfg.models) prepared.push_back(prepare_model(cfg, entry, domains, progress));
  const Analyzer analyzer(cfg, registry, statistics, progress);
  std::map<std::string, std::string> files;
  std::ostringstream report;
  report << report_header(cfg, threads);
  for (std::size_t mi = 0; mi < cfg.models.size(); ++mi) {
    const ModelInputs in = model_inputs(cfg, cfg.models[mi], prepared[mi], domains);
    for (const BitSetting& bits : cfg.bits) {
      const SettingAnalysis a = analyzer.analyze(in, bits);
      render(cfg, a, report, files);
      progress << "analysis " << a.tag << ": all " << bits.label() << " " << fixed(100 * a.steps.front().quant_top1, 2) << " %";
      if (a.chosen) progress << ", chosen " << fixed(100 * a.chosen->quant_top1, 2) << " % at " << a.chosen->size_bytes << " bytes";
      progress << ", FP32 " << fixed(100 * a.fp32_top1, 2) << " %\n" << std::flush;
    }
  }
  files["report.md"] = report.str();
  write_files_atomically(out_dir, files);
}

}  // namespace xdq
