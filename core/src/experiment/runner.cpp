#include "xdq/experiment/runner.h"

#include <chrono>
#include <iomanip>
#include <map>
#include <ostream>
#include <sstream>

#include "xdq/data/sources.h"
#include "xdq/error.h"
#include "xdq/exec/executor.h"
#include "xdq/ir/import.h"
#include "xdq/ir/passes.h"
#include "xdq/parallel.h"
#include "xdq/plugin/registry.h"
#include "xdq/quant/ptq.h"

namespace xdq {

namespace {

class SourceCache {
 public:
  explicit SourceCache(const ExperimentConfig& cfg) : cfg_(cfg) {}
  const Dataset& get(const std::string& name) {
    auto it = cache_.find(name);
    if (it != cache_.end()) return it->second;
    return cache_[name] = load_source(name, cfg_.data);
  }

 private:
  const ExperimentConfig& cfg_;
  std::map<std::string, Dataset> cache_;
};

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

YAML::Node plugin_list_yaml(const std::vector<PluginChoice>& choices) {
  YAML::Node list(YAML::NodeType::Sequence);
  for (const auto& c : choices) {
    YAML::Node item;
    item["name"] = c.name;
    if (c.label != c.name) item["label"] = c.label;
    for (const auto& [key, value] : c.options.values()) {
      if (auto b = std::get_if<bool>(&value)) item[key] = *b;
      else if (auto i = std::get_if<std::int64_t>(&value)) item[key] = *i;
      else if (auto d = std::get_if<double>(&value)) item[key] = *d;
      else item[key] = std::get<std::string>(value);
    }
    list.push_back(item);
  }
  return list;
}

YAML::Node spec_yaml(const QuantSpec& spec) {
  YAML::Node n;
  n["symmetric"] = spec.symmetric;
  n["per_channel"] = spec.per_channel;
  n["narrow_range"] = spec.narrow_range;
  n["pow2_scale"] = spec.pow2_scale;
  return n;
}

}  // namespace

ExperimentResults run_experiment(const ExperimentConfig& cfg, PluginRegistry& registry, std::ostream& progress,
                                 std::string* resolved_yaml) {
  const int threads = apply_thread_count(cfg.threads);
  ExperimentResults results;
  results.experiment = cfg.name;
  SourceCache sources(cfg);

  YAML::Node resolved;
  resolved["experiment"] = cfg.name;
  resolved["seed"] = cfg.seed;
  resolved["threads"] = threads;
  resolved["source_file"] = cfg.file;

  const std::size_t total = cfg.models.size() * cfg.bits.size() * cfg.calibrators.size() * cfg.rounding.size();
  std::size_t index = 0;
  for (const ModelEntry& entry : cfg.models) {
    ImportedModel model = import_torchscript(entry.path);
    Preprocess pre = model.preprocess;
    if (entry.has_preprocess) pre = Preprocess{entry.mean, entry.std};
    else if (!model.has_preprocess)
      progress << "xdq: note: " << entry.path << " declares no input normalization; feeding [0, 1] images\n";

    const Dataset calibration = sources.get(cfg.calibration_source).subset(cfg.calibration_count, cfg.seed);
    const at::Tensor calib_images = pre.apply(calibration.images);
    std::vector<Dataset> tests;
    for (const auto& d : cfg.test_domains)
      tests.push_back(cfg.test_count > 0 ? sources.get(d).subset(cfg.test_count, cfg.seed) : sources.get(d));

    const Executor fp32(model.graph);
    std::vector<double> fp32_top1;
    for (const auto& t : tests)
      fp32_top1.push_back(top1_accuracy([&](const at::Tensor& x) { return fp32.forward(x); }, t, pre, cfg.batch_size));

    Graph folded = model.graph;
    const int folded_pairs = cfg.fold_bn ? fold_batch_norm(folded) : 0;

    YAML::Node m;
    m["name"] = entry.name;
    m["path"] = entry.path;
    m["hash"] = file_hash(entry.path);
    m["mean"] = pre.mean;
    m["std"] = pre.std;
    m["folded_bn"] = folded_pairs;
    resolved["models"].push_back(m);
    YAML::Node c;
    c["source"] = cfg.calibration_source;
    c["count"] = calibration.size();
    c["seed"] = cfg.seed;
    c["hash"] = calibration.content_hash();
    resolved["calibration"][entry.name] = c;

    for (const BitSetting& bits : cfg.bits) {
      PtqSettings settings;
      settings.w_bits = bits.w_bits;
      settings.a_bits = bits.a_bits;
      settings.scheme = cfg.scheme;
      settings.overrides = cfg.overrides;
      for (const PluginChoice& cal : cfg.calibrators) {
        const auto calibration_start = std::chrono::steady_clock::now();
        const PluginRecord& cal_plugin = registry.get(PluginKind::Calibrator, cal.name);
        auto calibrator = registry.create<Calibrator>(cal.name, cal.options);
        QuantizedModel calibrated(folded, settings);
        calibrated.calibrate_activations(*calibrator, cal_plugin, calib_images, cfg.batch_size);
        calibrated.set_weight_ranges(cfg.weight_range);
        const double calibration_seconds = seconds_since(calibration_start);
        for (const PluginChoice& rnd : cfg.rounding) {
          const auto start = std::chrono::steady_clock::now();
          const PluginRecord& rnd_plugin = registry.get(PluginKind::WeightOptimizer, rnd.name);
          auto optimizer = registry.create<WeightOptimizer>(rnd.name, rnd.options);
          QuantizedModel quantized = calibrated;
          quantized.round_weights(*optimizer, rnd_plugin, calib_images, cfg.seed);
          const Executor exec = quantized.executor();
          RunResult run;
          run.model = entry.name;
          run.w_bits = bits.w_bits;
          run.a_bits = bits.a_bits;
          run.calibrator = cal.label;
          run.rounding = rnd.label;
          run.id = entry.name + "/" + bits.label() + "/" + cal.label + "/" + rnd.label;
          run.calibration_source = cfg.calibration_source;
          run.calibration_count = calibration.size();
          std::ostringstream line;
          line << "[" << ++index << "/" << total << "] " << run.id << std::fixed << std::setprecision(4);
          for (std::size_t t = 0; t < tests.size(); ++t) {
            DomainResult d;
            d.domain = cfg.test_domains[t];
            d.n = tests[t].size();
            d.fp32_top1 = fp32_top1[t];
            d.quant_top1 = top1_accuracy([&](const at::Tensor& x) { return exec.forward(x); }, tests[t], pre, cfg.batch_size);
            line << "  " << d.domain << ": fp32 " << d.fp32_top1 << " quant " << d.quant_top1;
            run.results.push_back(d);
          }
          run.seconds = calibration_seconds + seconds_since(start);
          line << "  (" << std::setprecision(1) << run.seconds << " s)";
          progress << line.str() << std::endl;
          results.runs.push_back(std::move(run));
        }
      }
    }
  }

  if (resolved_yaml) {
    YAML::Node q;
    q["preset"] = cfg.preset;
    q["weights"] = spec_yaml(cfg.scheme.weights);
    q["activations"] = spec_yaml(cfg.scheme.activations);
    q["activations"]["unsigned_after_relu"] = cfg.scheme.unsigned_after_relu;
    for (const auto& b : cfg.bits) q["bits"].push_back(b.label());
    q["weight_range"] = cfg.weight_range;
    q["fold_bn"] = cfg.fold_bn;
    for (const auto& o : cfg.overrides) {
      YAML::Node on;
      on["layers"] = o.layers;
      if (o.w_bits) on["w_bits"] = *o.w_bits;
      if (o.a_bits) on["a_bits"] = *o.a_bits;
      q["overrides"].push_back(on);
    }
    q["calibrators"] = plugin_list_yaml(cfg.calibrators);
    q["rounding"] = plugin_list_yaml(cfg.rounding);
    resolved["quantization"] = q;
    resolved["calibration_batch_size"] = cfg.batch_size;
    resolved["test"]["domains"] = cfg.test_domains;
    resolved["test"]["count"] = cfg.test_count;
    YAML::Emitter out;
    out << resolved;
    *resolved_yaml = std::string("# Resolved by xdq: every default filled in, with hashes of model files and\n"
                                 "# calibration sets (FNV-1a 64) so a result traces back to its inputs.\n") +
                     out.c_str() + "\n";
  }
  return results;
}

ExperimentResults run_experiment_to(const ExperimentConfig& cfg, PluginRegistry& registry, const std::string& out_dir,
                                    std::ostream& progress) {
  std::string resolved;
  ExperimentResults results = run_experiment(cfg, registry, progress, &resolved);
  std::ostringstream header;
  header << "Source: `" << cfg.file << "`; preset `" << cfg.preset << "`, weight ranges `" << cfg.weight_range
         << "`, seed " << cfg.seed << ". Drop = quantized minus FP32 top-1, in points.\n";
  write_files_atomically(out_dir, {{"config.resolved.yaml", resolved},
                                   {"results.json", results_json(results)},
                                   {"results.csv", results_csv(results)},
                                   {"report.md", results_markdown(results, header.str())}});
  return results;
}

}  // namespace xdq
