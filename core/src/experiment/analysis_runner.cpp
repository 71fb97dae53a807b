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

#include "analysis_shards.h"
#include "prepare.h"
#include "shards.h"
#include "xdq/analysis/analysis.h"
#include "xdq/error.h"
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

double top1(const QuantizedModel& model, const at::Tensor& images, const at::Tensor& labels, std::int64_t batch) {
  const Executor exec = model.executor();
  at::NoGradGuard no_grad;
  std::int64_t correct = 0;
  for (std::int64_t b = 0; b < images.size(0); b += batch) {
    const std::int64_t e = std::min(images.size(0), b + batch);
    correct += exec.forward(images.slice(0, b, e)).argmax(1).cpu().eq(labels.slice(0, b, e)).sum().item<std::int64_t>();
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

  // Runs the job's phases after those `shards` holds a checkpoint of, checkpointing each.
  SettingAnalysis analyze(const ModelInputs& in, const BitSetting& bits, const ShardFolder& shards,
                          const std::string& id) const;

 private:
  QuantizedModel nearest(const ModelInputs& in, const PtqSettings& settings, const at::Tensor& calibration) const {
    // The folded model as it is: the analysis measures quantization error, not what passes change.
    RecipeSettings recipe = recipe_settings(cfg_.quantization, cfg_.calibration, cfg_.execution.torch_device(), settings,
                                            cfg_.quantization.calibrators.front(),
                                            registry_.default_choice(PluginKind::WeightOptimizer, "nearest"), cfg_.execution.seed);
    recipe.passes.clear();
    const QuantizeRecipe nearest(registry_, std::move(recipe), progress_);
    const CalibrationData data = calibration_data(calibration, in.prepared->pre, &statistics_);
    return nearest.rounded(nearest.calibrated(in.folded, data), data);
  }
  void measure_layers(const ModelInputs& in, const QuantizedModel& model, SettingAnalysis& a) const;
  void flag_merges(const Graph& folded, SettingAnalysis& a) const;
  void cross_domain(const ModelInputs& in, const QuantizedModel& model, SettingAnalysis& a) const;
  void mixed_precision(const ModelInputs& in, SettingAnalysis& a) const;

  const ExperimentConfig& cfg_;
  PluginRegistry& registry_;
  StatisticsCache& statistics_;
  std::ostream& progress_;
  LayerwiseMode mode_;
};

// Per layer: the measurements, then the flags that name a cause; the ranking by output SQNR (continuous;
// the top-1 change of one layer is a few images either way).
void Analyzer::measure_layers(const ModelInputs& in, const QuantizedModel& model, SettingAnalysis& a) const {
  const at::Tensor& images = in.test_images[0];
  const auto errors = layerwise_errors(model, mode_, images, in.test_labels[0], cfg_.calibration.batch_size);
  const auto graph_sqnr = graphwise_sqnr(model, images, cfg_.calibration.batch_size);
  const auto outliers = activation_outlier_ratios(model, in.calibration[0], cfg_.calibration.batch_size);
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
  a.merges = merge_stats(in.folded, in.calibration[0], a.bits->a_bits, cfg_.calibration.batch_size);
  flag_merges(in.folded, a);
  a.order.resize(a.rows.size());
  for (std::size_t i = 0; i < a.order.size(); ++i) a.order[i] = i;
  std::stable_sort(a.order.begin(), a.order.end(),
                   [&](std::size_t x, std::size_t y) { return a.rows[x].error.sqnr_db() < a.rows[y].error.sqnr_db(); });
  for (std::size_t k = 0; k < std::min<std::size_t>(3, a.order.size()); ++k) a.rows[a.order[k]].flags.push_back("most_sensitive");
  a.images = images.size(0);
  a.fp32_top1 = static_cast<double>(errors.empty() ? 0 : errors[0].fp_correct) / static_cast<double>(a.images);
  for (const auto& layer : model.layers()) a.fp32_bytes += 4 * in.folded.nodes[layer.node].weight.numel();
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
void Analyzer::cross_domain(const ModelInputs& in, const QuantizedModel& model, SettingAnalysis& a) const {
  progress_ << "analysis " << a.tag << ": cross-domain layerwise\n" << std::flush;
  std::map<std::pair<std::string, std::string>, std::vector<double>> sqnr_ab;
  std::map<std::pair<std::string, std::string>, double> top1_ab;
  for (std::size_t c = 0; c < cfg_.calibration.domains.size(); ++c) {
    const QuantizedModel qa = c == 0 ? model : nearest(in, a.settings, in.calibration[c]);
    for (std::size_t t = 0; t < cfg_.test.domains.size(); ++t) {
      std::vector<OutputError> in_domain;  // measured by the layers phase
      for (const LayerRow& r : a.rows) in_domain.push_back(r.error);
      const auto errs = c == 0 && t == 0 ? in_domain
                                         : layerwise_errors(qa, mode_, in.test_images[t], in.test_labels[t], cfg_.calibration.batch_size);
      const auto key = std::make_pair(cfg_.calibration.domains[c].name, cfg_.test.domains[t].name);
      for (const auto& e : errs) sqnr_ab[key].push_back(e.sqnr_db());
      top1_ab[key] = top1(qa, in.test_images[t], in.test_labels[t], cfg_.calibration.batch_size);
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
    pt.quant_top1 = top1(q, in.test_images[0], in.test_labels[0], cfg_.calibration.batch_size);
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

// Phases of a job, in order; a checkpoint records how many are finished.
enum Phase { kLayers = 1, kCrossDomain = 2 };

SettingAnalysis Analyzer::analyze(const ModelInputs& in, const BitSetting& bits, const ShardFolder& shards,
                                  const std::string& id) const {
  const PtqSettings settings = ptq_settings(cfg_.quantization, bits);
  SettingAnalysis a;
  int finished = 0;
  if (const auto saved = shards.phases(id)) {
    a = setting_from_json(saved->at("analysis"), *in.entry, bits, settings);
    finished = saved->at("phases_finished");
    progress_ << "analysis " << a.tag << ": " << finished << " phase(s) finished before; read from its checkpoint\n";
  } else {
    a.entry = in.entry;
    a.bits = &bits;
    a.tag = in.entry->name + "_" + bits.label();
    a.settings = settings;
  }
  const auto checkpoint = [&](int phase) {
    shards.save_phases(id, {{"phases_finished", phase}, {"analysis", setting_json(a)}});
  };
  std::optional<QuantizedModel> model;  // ranges from the first calibration domain, nearest rounding
  if (finished < kCrossDomain) model = nearest(in, a.settings, in.calibration[0]);
  if (finished < kLayers) {
    progress_ << "analysis " << a.tag << ": layerwise, graphwise, weights, merges, activations\n" << std::flush;
    measure_layers(in, *model, a);
    checkpoint(kLayers);
  }
  if (finished < kCrossDomain) {
    cross_domain(in, *model, a);
    checkpoint(kCrossDomain);
  }
  mixed_precision(in, a);
  return a;
}

// The first calibration count of every calibration domain (seed `seed`), and `test_images` per test domain.
ModelInputs model_inputs(const ModelEntry& entry, const PreparedModel& p, bool fold_bn, const CalibrationSettings& calibration,
                         std::uint64_t seed, std::int64_t test_images, DomainCache& domains) {
  ModelInputs in{&entry, &p, p.model.graph, {}, {}, {}, {}};
  QuantizeRecipe::fold(in.folded, fold_bn);
  for (const Node& n : p.model.graph.nodes)
    if (n.is_layer()) in.unfolded[n.name] = n.weight;
  for (const DomainSpec& d : calibration.domains)
    in.calibration.push_back(p.pre.apply(domains.calibration_set(d, p.shape, calibration.counts.front(), seed, &entry).images));
  for (const TestImages& t : p.tests) {
    const Dataset head = t.head(test_images);
    in.test_images.push_back(p.pre.apply(head.images));
    in.test_labels.push_back(head.labels);
  }
  return in;
}

void print_summary(const SettingAnalysis& a, std::ostream& progress) {
  progress << "analysis " << a.tag << ": all " << a.bits->label() << " " << fixed(100 * a.steps.front().quant_top1, 2) << " %";
  if (a.chosen) progress << ", chosen " << fixed(100 * a.chosen->quant_top1, 2) << " % at " << a.chosen->size_bytes << " bytes";
  progress << ", FP32 " << fixed(100 * a.fp32_top1, 2) << " %\n" << std::flush;
}

}  // namespace

std::vector<std::string> analysis_job_ids(const std::vector<ModelEntry>& models, const std::vector<BitSetting>& bit_settings) {
  std::vector<std::string> ids;
  for (const ModelEntry& entry : models)
    for (const BitSetting& bits : bit_settings)
      ids.push_back(file_name_safe(std::to_string(ids.size()) + "-" + entry.name + "_" + bits.label()));
  return ids;
}

AnalysisRun run_analysis(const ExperimentConfig& cfg, PluginRegistry& registry, std::ostream& progress,
                         const RunOptions& options) {
  if (cfg.quantization.scheme.placement != Placement::LayerInputs && cfg.analysis.layerwise != "weights")
    throw Error("analysis.layerwise: '" + cfg.analysis.layerwise + "' quantizes the activation each layer reads, and preset '" +
                cfg.quantization.preset + "' quantizes layer outputs too; use analysis.layerwise: weights with this preset");
  AnalysisRun run;
  run.source = results_source(cfg);
  run.options = cfg.analysis;
  run.threads = apply_thread_count(cfg.execution.threads);
  warn_if_convolutions_stay_direct(cfg.execution, progress);
  if (cfg.execution.isolation == "process")
    progress << "xdq: warning: isolation: process runs the jobs of xdq run in child processes; the analysis jobs run "
                "in this one (xdq analyze --job K runs one alone)\n";
  const ShardFolder shards([&cfg] { return resolved_config_yaml(cfg); }, options.out_dir, shard_folder(ShardKind::Analysis));
  const auto ids = analysis_job_ids(cfg.models, cfg.quantization.bits);
  if (options.only_job && *options.only_job >= ids.size())
    throw ConfigError("--job " + std::to_string(*options.only_job) + ": the analysis has " + std::to_string(ids.size()) +
                " jobs (0 to " + std::to_string(ids.size() - 1) + ", one per model and bit setting)");
  std::unique_ptr<PathLock> job_lock;
  if (options.only_job && !options.merge_only) job_lock = shards.lock(ids[*options.only_job]);
  const std::size_t per_model = cfg.quantization.bits.size();
  std::vector<std::optional<SettingAnalysis>> results(ids.size());
  std::vector<bool> todo(ids.size(), false), model_needed(cfg.models.size(), false);
  for (std::size_t k = 0; k < ids.size(); ++k) {
    if (options.only_job && *options.only_job != k) continue;
    const ModelEntry& entry = cfg.models[k / per_model];
    const BitSetting& bits = cfg.quantization.bits[k % per_model];
    if (shards.done(ids[k])) {
      progress << "xdq: analysis job " << ids[k] << " finished before; read from its shard\n";
      results[k] = setting_from_json(shards.read(ids[k]).at("analysis"), entry, bits, ptq_settings(cfg.quantization, bits));
    } else if (options.merge_only) {
      run.missing_jobs.push_back(ids[k]);
    } else {
      todo[k] = model_needed[k / per_model] = true;
    }
  }
  if (std::find(todo.begin(), todo.end(), true) != todo.end()) {
    DomainCache domains(cfg.file, cfg.execution, cfg.data, cfg.calibration, cfg.models, registry, progress);
    StatisticsCache statistics(cache_directory(cfg.data));
    const Analyzer analyzer(cfg, registry, statistics, progress);
    for (std::size_t mi = 0; mi < cfg.models.size(); ++mi) {
      if (!model_needed[mi]) continue;
      const ModelEntry& entry = cfg.models[mi];
      const PreparedModel prepared = prepare_model(entry, cfg.execution, cfg.test, cfg.quantization, domains, progress);
      const ModelInputs in = model_inputs(entry, prepared, cfg.quantization.fold_bn, cfg.calibration, cfg.execution.seed,
                                          cfg.analysis.images, domains);
      for (std::size_t k = mi * per_model; k < (mi + 1) * per_model; ++k) {
        if (!todo[k]) continue;
        results[k] = analyzer.analyze(in, cfg.quantization.bits[k % per_model], shards, ids[k]);
        shards.write(ids[k], [&](const std::filesystem::path&) {
          return nlohmann::json{{"job", ids[k]}, {"analysis", setting_json(*results[k])}};
        });
        print_summary(*results[k], progress);
      }
    }
  }
  for (auto& r : results)
    if (r) run.settings.push_back(std::move(*r));
  return run;
}

}  // namespace xdq
