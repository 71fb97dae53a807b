#include "xdq/experiment/analysis_runner.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <map>
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

}  // namespace

void run_analysis_to(const ExperimentConfig& cfg, PluginRegistry& registry, const std::string& out_dir,
                     std::ostream& progress) {
  const int threads = apply_thread_count(cfg.threads);
  const auto& settings_in = cfg.analysis;
  DomainCache domains(cfg, registry, progress);
  StatisticsCache statistics(cache_directory(cfg.data));
  std::vector<PreparedModel> prepared;
  for (const ModelEntry& entry : cfg.models) prepared.push_back(prepare_model(cfg, entry, domains, progress));
  const LayerwiseMode mode = parse_layerwise_mode(settings_in.layerwise);
  const PluginChoice& calibrator = cfg.calibrators.front();
  const std::int64_t count = cfg.calibration_counts.front();

  std::map<std::string, std::string> files;
  std::ostringstream report;
  report << "# " << cfg.name << ": outlier-layer analysis\n\nSource: `" << cfg.file << "`; preset `" << cfg.preset
         << "`, calibrator `" << calibrator.label << "`, weight ranges `" << cfg.weight_range
         << "`, nearest rounding, seed " << cfg.seed << ", " << threads << " threads. Layerwise: one layer's "
         << settings_in.layerwise << " quantized, everything else FP32, error at the network output over "
         << settings_in.images << " held-out images; graphwise: the whole model quantized, SQNR of each layer's "
         << "output. Mixed precision raises the most sensitive layers to " << settings_in.fallback_bits
         << " bit until the top-1 drop is at most " << settings_in.target_drop << " points"
         << (settings_in.size_budget ? " within " + std::to_string(settings_in.size_budget) + " bytes" : std::string())
         << ". Sizes count conv/linear weights.\n\n";

  for (std::size_t mi = 0; mi < cfg.models.size(); ++mi) {
    const ModelEntry& entry = cfg.models[mi];
    const PreparedModel& p = prepared[mi];
    Graph folded = p.model.graph;
    if (cfg.fold_bn) fold_batch_norm(folded);
    // Unfolded weights by layer name, for the effect of folding.
    std::map<std::string, at::Tensor> unfolded;
    for (const Node& n : p.model.graph.nodes)
      if (n.is_layer()) unfolded[n.name] = n.weight;
    std::vector<at::Tensor> calib_images;
    for (const DomainSpec& d : cfg.calibration_domains)
      calib_images.push_back(p.pre.apply(domains.get(d, Split::Train, p.shape, count, cfg.seed, &entry).images));
    std::vector<at::Tensor> test_images, test_labels;
    for (const Dataset* t : p.tests) {
      const std::int64_t n = std::min(settings_in.images, t->size());
      test_images.push_back(p.pre.apply(t->images.slice(0, 0, n)));
      test_labels.push_back(t->labels.slice(0, 0, n));
    }

    for (const BitSetting& bits : cfg.bits) {
      const std::string tag = entry.name + "_" + bits.label();
      progress << "analysis " << tag << ": layerwise, graphwise, weights, merges, activations\n" << std::flush;
      const PtqSettings settings = ptq_settings(cfg, bits);
      QuantizedModel model =
          calibrated_model(cfg, folded, settings, calibrator, registry, calib_images[0], p.pre, statistics, progress);
      model.round_to_nearest();
      const at::Tensor& images = test_images[0];
      const at::Tensor& labels = test_labels[0];

      // Per layer: the measurements, then the flags that name a cause.
      const auto errors = layerwise_errors(model, mode, images, labels, cfg.batch_size);
      const auto graph_sqnr = graphwise_sqnr(model, images, cfg.batch_size);
      const auto outliers = activation_outlier_ratios(model, calib_images[0], cfg.batch_size);
      const auto merges = merge_stats(folded, calib_images[0], bits.a_bits, cfg.batch_size);
      std::vector<LayerRow> rows;
      for (std::size_t l = 0; l < model.layers().size(); ++l) {
        const Node& n = folded.nodes[model.layers()[l].node];
        LayerRow r;
        r.name = n.name;
        r.op = n.is_depthwise() ? "conv2d (depthwise)" : n.op;
        r.error = errors[l];
        r.graph_sqnr_db = graph_sqnr[l];
        r.folded = weight_stats(n.weight);
        r.unfolded = weight_stats(unfolded.at(n.name));
        for (std::size_t a = 0; a < model.activations().size(); ++a)
          if (model.activations()[a].value == n.inputs[0]) r.activation_outlier = outliers[a];
        if (r.folded.channel_range_ratio >= kChannelRangeRatio) {
          const bool from_folding = n.folded_bn.gamma.defined() &&
                                    r.folded.channel_range_ratio >= kFoldingGrowth * r.unfolded.channel_range_ratio;
          r.flags.push_back(from_folding ? "bn_folding_outliers" : "wide_channel_ranges");
        }
        if (r.folded.kurtosis >= kKurtosis) r.flags.push_back("heavy_tailed_weights");
        if (r.activation_outlier >= kActivationOutlier) r.flags.push_back("activation_outliers");
        rows.push_back(r);
      }
      for (const MergeStats& m : merges) {
        if (m.range_ratio < kMergeRangeRatio) continue;
        const Node& merge = folded.nodes[m.node];
        std::vector<int> branches = {merge.inputs[0], merge.inputs[1]};
        if (merge.op == "aten::cat") branches = folded.nodes[folded.producer(merge.inputs[0])].inputs;
        for (int v : branches) {
          const int layer = producing_layer(folded, v);
          for (auto& r : rows)
            if (layer >= 0 && r.name == folded.nodes[layer].name &&
                std::find(r.flags.begin(), r.flags.end(), "merge_range_mismatch") == r.flags.end())
              r.flags.push_back("merge_range_mismatch");
        }
      }
      // Ranking by output SQNR (continuous; the top-1 change of one layer is a few images either way).
      std::vector<std::size_t> order(rows.size());
      for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
      std::stable_sort(order.begin(), order.end(),
                       [&](std::size_t a, std::size_t b) { return rows[a].error.sqnr_db() < rows[b].error.sqnr_db(); });
      for (std::size_t k = 0; k < std::min<std::size_t>(3, order.size()); ++k) rows[order[k]].flags.push_back("most_sensitive");

      // Cross-domain: ranges from each calibration domain A, layerwise SQNR on each test domain B.
      progress << "analysis " << tag << ": cross-domain layerwise\n" << std::flush;
      nlohmann::json cross = nlohmann::json::array();
      std::map<std::pair<std::string, std::string>, std::vector<double>> sqnr_ab;
      std::map<std::pair<std::string, std::string>, double> top1_ab;
      for (std::size_t a = 0; a < cfg.calibration_domains.size(); ++a) {
        QuantizedModel qa = a == 0 ? model
                                    : calibrated_model(cfg, folded, settings, calibrator, registry, calib_images[a],
                                                       p.pre, statistics, progress);
        qa.round_to_nearest();
        for (std::size_t b = 0; b < cfg.test_domains.size(); ++b) {
          const auto errs = a == 0 && b == 0 ? errors : layerwise_errors(qa, mode, test_images[b], test_labels[b], cfg.batch_size);
          const auto key = std::make_pair(cfg.calibration_domains[a].name, cfg.test_domains[b].name);
          for (const auto& e : errs) sqnr_ab[key].push_back(e.sqnr_db());
          top1_ab[key] = top1(qa, test_images[b], test_labels[b], cfg.batch_size);
        }
      }
      for (const auto& [key, values] : sqnr_ab) {
        nlohmann::json c{{"calibration", key.first}, {"test", key.second}, {"quant_top1", top1_ab[key]}};
        const auto in_domain = sqnr_ab.find({key.second, key.second});
        for (std::size_t l = 0; l < values.size(); ++l) {
          nlohmann::json lj{{"name", rows[l].name}, {"sqnr_db", values[l]}};
          if (in_domain != sqnr_ab.end() && key.first != key.second) lj["shift_db"] = values[l] - in_domain->second[l];
          c["layers"].push_back(lj);
        }
        cross.push_back(c);
      }

      // Mixed precision: the k most sensitive layers raised, k = 0 .. all.
      progress << "analysis " << tag << ": mixed-precision search over " << order.size() << " layers\n" << std::flush;
      std::vector<ParetoPoint> steps;
      const double fp32_top1 = static_cast<double>(errors.empty() ? 0 : errors[0].fp_correct) / static_cast<double>(images.size(0));
      for (std::size_t k = 0; k <= order.size(); ++k) {
        PtqSettings mixed = settings;
        if (k > 0) {
          LayerOverride raise;
          for (std::size_t i = 0; i < k; ++i) raise.layers.push_back(rows[order[i]].name);
          raise.w_bits = raise.a_bits = settings_in.fallback_bits;
          mixed.overrides.push_back(raise);
        }
        QuantizedModel q =
            calibrated_model(cfg, folded, mixed, calibrator, registry, calib_images[0], p.pre, statistics, progress);
        q.round_to_nearest();
        ParetoPoint pt;
        pt.raised = static_cast<int>(k);
        pt.size_bytes = weight_bytes(q, &pt.bits);
        pt.quant_top1 = top1(q, images, labels, cfg.batch_size);
        steps.push_back(pt);
      }
      std::vector<ParetoPoint> pareto;
      {
        std::vector<ParetoPoint> by_size = steps;
        std::stable_sort(by_size.begin(), by_size.end(), [](const auto& a, const auto& b) { return a.size_bytes < b.size_bytes; });
        for (const auto& pt : by_size)
          if (pareto.empty() || pt.quant_top1 > pareto.back().quant_top1) pareto.push_back(pt);
      }
      const ParetoPoint* chosen = nullptr;
      for (const auto& pt : steps) {
        const bool fits = settings_in.size_budget == 0 || pt.size_bytes <= settings_in.size_budget;
        if (fits && 100 * (fp32_top1 - pt.quant_top1) <= settings_in.target_drop) {
          chosen = &pt;
          break;
        }
      }
      if (!chosen)  // target not reached: the most accurate point within the budget
        for (const auto& pt : steps)
          if ((settings_in.size_budget == 0 || pt.size_bytes <= settings_in.size_budget) &&
              (!chosen || pt.quant_top1 > chosen->quant_top1))
            chosen = &pt;
      std::int64_t fp32_bytes = 0;
      for (const auto& layer : model.layers()) fp32_bytes += 4 * folded.nodes[layer.node].weight.numel();

      // analysis.json
      nlohmann::json j;
      j["model"] = entry.name;
      j["bits"] = bits.label();
      j["calibration"] = cfg.calibration_domains[0].name;
      j["test"] = cfg.test_domains[0].name;
      j["images"] = images.size(0);
      j["layerwise"] = settings_in.layerwise;
      j["fp32_top1"] = fp32_top1;
      j["fp32_size_bytes"] = fp32_bytes;
      for (const auto& r : rows)
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
      for (const auto& pt : pareto)
        j["pareto"].push_back({{"size_bytes", pt.size_bytes}, {"quant_top1", pt.quant_top1}, {"bits", pt.bits}, {"raised", pt.raised}});
      for (const auto& pt : steps)
        j["search"].push_back({{"size_bytes", pt.size_bytes}, {"quant_top1", pt.quant_top1}, {"raised", pt.raised}});
      if (chosen) j["chosen"] = {{"size_bytes", chosen->size_bytes}, {"quant_top1", chosen->quant_top1}, {"bits", chosen->bits}, {"raised", chosen->raised}};
      for (const auto& m : merges)
        j["merges"].push_back({{"name", m.name}, {"op", m.op}, {"inputs", m.inputs}, {"ranges", m.ranges},
                               {"range_ratio", m.range_ratio}, {"own_sqnr_db", m.own_sqnr_db}, {"shared_sqnr_db", m.shared_sqnr_db}});
      j["cross_domain"] = cross;
      files[tag + "/analysis.json"] = j.dump(2) + "\n";

      // mixed_precision.yaml: the chosen assignment as overrides to include.
      if (chosen) {
        YAML::Emitter y;
        y << YAML::BeginMap << YAML::Key << "overrides" << YAML::Value << YAML::BeginSeq;
        std::map<int, std::vector<std::string>> by_bits;
        for (const auto& [name, b] : chosen->bits) by_bits[b].push_back(name);
        for (const auto& [b, names] : by_bits) {
          y << YAML::Flow << YAML::BeginMap << YAML::Key << "layers" << YAML::Value << YAML::Flow << names;
          y << YAML::Key << "w_bits" << YAML::Value << b << YAML::Key << "a_bits" << YAML::Value
            << (b == settings.w_bits ? settings.a_bits : settings_in.fallback_bits) << YAML::EndMap;
        }
        y << YAML::EndSeq << YAML::EndMap;
        files[tag + "/mixed_precision.yaml"] = "# xdq analyze: " + entry.name + " " + bits.label() + ", top-1 " +
                                               fixed(100 * chosen->quant_top1, 2) + " % at " +
                                               std::to_string(chosen->size_bytes) + " weight bytes.\n# Use with: " +
                                               "quantization.overrides: [{include: <this file>}]\n" + y.c_str() + "\n";
      }

      // Report section and pictures.
      report << "## " << entry.name << " " << bits.label() << "\n\n"
             << "FP32 top-1 " << fixed(100 * fp32_top1, 2) << " % on " << images.size(0) << " images of `"
             << cfg.test_domains[0].name << "`; ranges from `" << cfg.calibration_domains[0].name << "`.\n\n"
             << "| rank | layer | op | SQNR (dB) | cosine | top-1 drop (pt) | graphwise SQNR (dB) | ch. range ratio (unfolded) | kurtosis | act. max/p99.99 | flags |\n"
             << "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n";
      for (std::size_t k = 0; k < order.size(); ++k) {
        const LayerRow& r = rows[order[k]];
        std::string flags;
        for (const auto& f : r.flags) flags += (flags.empty() ? "" : ", ") + f;
        report << "| " << k + 1 << " | " << r.name << " | " << r.op << " | " << fixed(r.error.sqnr_db(), 1) << " | "
               << fixed(r.error.cosine(), 4) << " | " << fixed(r.error.top1_drop(), 2) << " | " << fixed(r.graph_sqnr_db, 1)
               << " | " << fixed(r.folded.channel_range_ratio, 1) << " (" << fixed(r.unfolded.channel_range_ratio, 1) << ") | "
               << fixed(r.folded.kurtosis, 1) << " | " << fixed(r.activation_outlier, 2) << " | " << flags << " |\n";
      }
      if (!merges.empty()) {
        report << "\nMerges (inputs' ranges on the calibration images; SQNR of the worst input at a" << bits.a_bits
               << " on its own range vs on the shared range):\n\n| merge | op | range ratio | own SQNR (dB) | shared SQNR (dB) |\n"
               << "|---|---|---:|---:|---:|\n";
        for (const auto& m : merges)
          report << "| " << m.name << " | " << m.op << " | " << fixed(m.range_ratio, 2) << " | " << fixed(m.own_sqnr_db, 1)
                 << " | " << fixed(m.shared_sqnr_db, 1) << " |\n";
      }
      if (cross.size() > 1) {
        report << "\nCross-domain (ranges from A, measured on B): quantized top-1 and the three layers whose SQNR falls "
                  "most against ranges calibrated on B itself.\n\n| A | B | quant top-1 | most shift-sensitive layers (dB) |\n|---|---|---:|---|\n";
        for (const auto& c : cross) {
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
      report << "\nMixed precision (" << settings_in.fallback_bits << "-bit fallback):\n\n| configuration | weight bytes | top-1 |\n|---|---:|---:|\n"
             << "| all " << bits.label() << " (first/last per overrides) | " << steps.front().size_bytes << " | "
             << fixed(100 * steps.front().quant_top1, 2) << " % |\n";
      if (chosen)
        report << "| chosen: " << chosen->raised << " most sensitive layer(s) raised | " << chosen->size_bytes << " | "
               << fixed(100 * chosen->quant_top1, 2) << " % |\n";
      report << "| FP32 | " << fp32_bytes << " | " << fixed(100 * fp32_top1, 2) << " % |\n\n";
      if (image_output_available()) {
        std::vector<std::string> names;
        std::vector<std::vector<double>> bars(2);
        for (const auto& r : rows) {
          names.push_back(r.name);
          bars[0].push_back(r.error.sqnr_db());
          bars[1].push_back(r.graph_sqnr_db);
        }
        files[tag + "/sqnr.png"] = render_bars_png(tag + ": SQNR (dB) per layer", names,
                                                   {"layerwise (output)", "graphwise (layer output)"}, bars);
        std::vector<std::pair<double, double>> curve;
        for (const auto& pt : pareto) curve.emplace_back(static_cast<double>(pt.size_bytes), 100 * pt.quant_top1);
        files[tag + "/pareto.png"] = render_curves_png(tag + ": top-1 (%) vs weight bytes, Pareto front", {"mixed precision"},
                                                       {curve}, false);
        report << "![sqnr](" << tag << "/sqnr.png) ![pareto](" << tag << "/pareto.png)\n\n";
      }
      progress << "analysis " << tag << ": all " << bits.label() << " " << fixed(100 * steps.front().quant_top1, 2) << " %";
      if (chosen) progress << ", chosen " << fixed(100 * chosen->quant_top1, 2) << " % at " << chosen->size_bytes << " bytes";
      progress << ", FP32 " << fixed(100 * fp32_top1, 2) << " %\n" << std::flush;
    }
  }
  files["report.md"] = report.str();
  write_files_atomically(out_dir, files);
}

}  // namespace xdq
