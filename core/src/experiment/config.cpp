#include "xdq/experiment/config.h"

#include <filesystem>
#include <iostream>
#include <map>
#include <regex>
#include <set>

#include "xdq/data/sources.h"
#include "xdq/error.h"
#include "xdq/plugin/interfaces.h"
#include "xdq/plugin/registry.h"

namespace xdq {

namespace fs = std::filesystem;

namespace {

std::string resolve(const fs::path& base, const std::string& p) {
  if (p.empty() || fs::path(p).is_absolute()) return p;
  return (base / p).lexically_normal().string();
}

BitSetting parse_bits(const ConfigNode& node) {
  static const std::regex pattern("w([0-9]+)a([0-9]+)");
  std::smatch m;
  const std::string text = node.as_string();
  if (!std::regex_match(text, m, pattern)) node.fail("expected a bit setting like w4a8, got '" + text + "'");
  BitSetting b{std::stoi(m[1]), std::stoi(m[2])};
  if (b.w_bits < 2 || b.w_bits > 8) node.fail("weight bits must be in [2, 8], got " + std::to_string(b.w_bits));
  if (b.a_bits < 2 || b.a_bits > 16) node.fail("activation bits must be in [2, 16], got " + std::to_string(b.a_bits));
  return b;
}

std::vector<TransformChoice> parse_transforms(const ConfigNode& list, const PluginRegistry& registry) {
  std::vector<TransformChoice> out;
  if (!list.defined()) return out;
  if (!list.is_sequence()) list.fail("expected a list of {name, severity}");
  for (std::size_t i = 0; i < list.size(); ++i) {
    const ConfigNode item = list[i];
    TransformChoice t;
    const ConfigNode name = item.is_map() ? item["name"] : item;
    t.name = name.as_string();
    const PluginRecord* plugin = registry.find(PluginKind::DomainTransform, t.name);
    if (!plugin) name.fail(registry.unknown_name_message(PluginKind::DomainTransform, t.name));
    if (item.is_map() && item.has("severity")) {
      const long long sev = item["severity"].as_int();
      if (sev < 1 || sev > 5) item["severity"].fail("expected an integer in [1, 5], got " + std::to_string(sev));
      t.severity = static_cast<int>(sev);
    }
    t.options = item.is_map() ? validate_options(item, plugin->options, {"name", "severity"}) : default_options(plugin->options);
    out.push_back(std::move(t));
  }
  return out;
}

// A domain reference: a declared domain, "dataset.split", or a bare dataset name.
DomainSpec resolve_domain(const ConfigNode& ref, const std::map<std::string, DomainSpec>& declared) {
  const std::string name = ref.as_string();
  if (auto it = declared.find(name); it != declared.end()) return it->second;
  DomainSpec d;
  d.name = name;
  if (parse_dataset_split(name, d.dataset, d.split)) {
    d.fixed_split = true;
    return d;
  }
  if (is_known_dataset(name)) {
    d.dataset = name;
    return d;
  }
  std::string known;
  for (const auto& [k, v] : declared) known += (known.empty() ? "" : ", ") + k;
  for (const auto& k : known_datasets()) known += (known.empty() ? "" : ", ") + k;
  ref.fail("unknown domain '" + name + "' (declared domains and datasets: " + known + "; or dataset.train / dataset.test)");
}

// One plugin: a name, or a map {name, label, options...}; options validated, then the factory tried.
PluginChoice parse_plugin(const ConfigNode& item, PluginKind kind, const PluginRegistry& registry) {
  PluginChoice choice;
  const ConfigNode name_node = item.is_map() ? item["name"] : item;
  choice.name = name_node.as_string();
  const PluginRecord* plugin = registry.find(kind, choice.name);
  if (!plugin) name_node.fail(registry.unknown_name_message(kind, choice.name));
  choice.label = item.is_map() ? item.get("label", choice.name) : choice.name;
  choice.options = item.is_map() ? validate_options(item, plugin->options, {"name", "label"})
                                 : default_options(plugin->options);
  // Options that only make sense together are checked by the plugin's factory: try it now, not mid-run.
  try {
    delete plugin_call(*plugin, "create", [&] { return plugin->create(choice.options); });
  } catch (const Error& e) {
    item.fail(e.what());
  }
  return choice;
}

std::vector<PluginChoice> parse_plugins(const ConfigNode& list, PluginKind kind, const PluginRegistry& registry) {
  if (!list.is_sequence() || list.size() == 0) list.fail(std::string("expected a non-empty list of ") + to_string(kind) + " names");
  std::vector<PluginChoice> out;
  std::set<std::string> labels;
  for (std::size_t i = 0; i < list.size(); ++i) {
    PluginChoice choice = parse_plugin(list[i], kind, registry);
    if (!labels.insert(choice.label).second)
      list[i].fail("duplicate " + std::string(to_string(kind)) + " '" + choice.label + "' (give one a distinct label)");
    out.push_back(std::move(choice));
  }
  return out;
}

// quantization.overrides: items {layers, w_bits, a_bits}, or {include: FILE} naming a YAML file whose
// `overrides` list is read in place (what `xdq analyze` writes as mixed_precision.yaml).
void parse_overrides(const ConfigNode& list, const fs::path& base, std::vector<LayerOverride>& out, int depth = 0) {
  if (!list.is_sequence()) list.fail("expected a list of {layers, w_bits, a_bits} or {include: file}");
  for (std::size_t i = 0; i < list.size(); ++i) {
    const ConfigNode o = list[i];
    if (o.has("include")) {
      o.check_keys({"include"});
      if (depth > 8) o["include"].fail("includes nested too deeply");
      const std::string file = resolve(base, o["include"].as_string());
      const ConfigNode included = ConfigNode::load_file(file);
      included.check_keys({"overrides"});
      parse_overrides(included["overrides"], fs::path(file).parent_path(), out, depth + 1);
      continue;
    }
    o.check_keys({"layers", "w_bits", "a_bits"});
    LayerOverride lo;
    lo.layers = o["layers"].as_string_list();
    lo.where = o["layers"].where();
    if (o.has("w_bits")) {
      lo.w_bits = static_cast<int>(o["w_bits"].as_int());
      if (*lo.w_bits < 2 || *lo.w_bits > 8) o["w_bits"].fail("expected an integer in [2, 8]");
    }
    if (o.has("a_bits")) {
      lo.a_bits = static_cast<int>(o["a_bits"].as_int());
      if (*lo.a_bits < 2 || *lo.a_bits > 16) o["a_bits"].fail("expected an integer in [2, 16]");
    }
    out.push_back(lo);
  }
}

}  // namespace

ExperimentConfig load_experiment(const std::string& path, const std::vector<std::string>& overrides,
                                 PluginRegistry& registry) {
  ExperimentConfig cfg;
  cfg.file = path;
  ConfigNode root = ConfigNode::load_file(path);
  for (const auto& kv : overrides) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos) throw Error("--set " + kv + ": expected key.path=value");
    root.set_path(kv.substr(0, eq), kv.substr(eq + 1));
  }
  cfg.root = root;
  const fs::path base = fs::path(path).parent_path();
  root.check_keys({"experiment", "seed", "threads", "jobs", "plugins", "data", "domains", "models", "calibration", "test",
                   "quantization", "diagnostics", "analysis"});
  if (root.has("analysis")) {
    const ConfigNode a = root["analysis"];
    a.check_keys({"images", "layerwise", "target_drop", "size_budget", "fallback_bits"});
    auto& s = cfg.analysis;
    s.images = a.get("images", s.images);
    if (s.images < 1) a["images"].fail("expected an integer >= 1");
    s.layerwise = a.get("layerwise", s.layerwise);
    if (s.layerwise != "weights" && s.layerwise != "activation" && s.layerwise != "both")
      a["layerwise"].fail("expected one of: weights, activation, both");
    s.target_drop = a.get("target_drop", s.target_drop);
    if (!(s.target_drop >= 0)) a["target_drop"].fail("expected a number of points >= 0");
    s.size_budget = a.get("size_budget", s.size_budget);
    if (s.size_budget < 0) a["size_budget"].fail("expected bytes >= 0 (0: no budget)");
    s.fallback_bits = a.get("fallback_bits", s.fallback_bits);
    if (s.fallback_bits < 2 || s.fallback_bits > 8) a["fallback_bits"].fail("expected an integer in [2, 8]");
  }
  if (root.has("diagnostics")) {
    const ConfigNode diag = root["diagnostics"];
    diag.check_keys({"layer_shift_images"});
    cfg.layer_shift_images = diag.get("layer_shift_images", 0LL);
    if (cfg.layer_shift_images < 0) diag["layer_shift_images"].fail("expected an integer >= 0 (0: off)");
  }
  cfg.name = root["experiment"].as_string();
  cfg.seed = static_cast<std::uint64_t>(root.get("seed", 0LL));
  cfg.threads = root.get("threads", 0);
  if (cfg.threads < 0) root["threads"].fail("expected an integer >= 0 (0: all cores)");
  cfg.jobs = root.get("jobs", cfg.jobs);
  if (cfg.jobs < 1) root["jobs"].fail("expected an integer >= 1 (runs at a time, sharing the threads)");

  if (root.has("plugins")) {
    const ConfigNode plugins = root["plugins"];
    plugins.check_keys({"paths"});
    for (const auto& p : plugins["paths"].as_string_list()) cfg.plugin_paths.push_back(resolve(base, p));
  }
  for (const auto& failure : registry.scan(plugin_search_dirs(cfg.plugin_paths)))
    std::cerr << "xdq: warning: " << failure << "\n";

  if (root.has("data")) {
    const ConfigNode data = root["data"];
    data.check_keys({"fashion_mnist", "opencv_samples", "sklearn_digits", "cache"});
    cfg.data.fashion_mnist = resolve(base, data.get("fashion_mnist", ""));
    cfg.data.opencv_samples = resolve(base, data.get("opencv_samples", ""));
    cfg.data.sklearn_digits = resolve(base, data.get("sklearn_digits", ""));
    cfg.data.cache = resolve(base, data.get("cache", ""));
  }

  std::map<std::string, DomainSpec> declared;
  std::vector<std::pair<std::string, ConfigNode>> synthesis_model_refs;  // checked once models are read
  if (root.has("domains")) {
    const ConfigNode domains = root["domains"];
    domains.require_map();
    for (const auto& name : domains.keys()) {
      const ConfigNode d = domains[name];
      d.check_keys({"dataset", "transforms", "mix", "synthesizer", "models"});
      DomainSpec spec;
      spec.name = name;
      if (d.has("synthesizer")) {
        if (d.has("dataset") || d.has("transforms") || d.has("mix"))
          d.fail("a synthesized domain has no dataset, transforms or mix of its own");
        spec.synthesizer = {parse_plugin(d["synthesizer"], PluginKind::Synthesizer, registry)};
        spec.dataset = "synthesized";
        if (d.has("models")) {
          spec.synthesis_models = d["models"].as_string_list();
          synthesis_model_refs.emplace_back(name, d["models"]);
        }
        declared[name] = spec;
        continue;
      }
      if (d.has("models")) d["models"].fail("only a synthesized domain lists models");
      if (d.has("mix")) {
        // Mixtures refer to domains declared before them, or to datasets.
        const ConfigNode mix = d["mix"];
        mix.require_map();
        for (const auto& part : mix.keys()) {
          const double w = mix[part].as_double();
          if (!(w > 0)) mix[part].fail("expected a positive weight");
          spec.mixture.emplace_back(resolve_domain(ConfigNode(YAML::Node(part), std::make_shared<const std::string>(mix.file()),
                                                              mix.key_path() + "." + part, mix[part].line()),
                                                   declared),
                                    w);
        }
        if (spec.mixture.empty()) mix.fail("expected at least one component");
        if (d.has("dataset") || d.has("transforms")) d.fail("a mixture has no dataset or transforms of its own");
        spec.dataset = "mixture";
        declared[name] = spec;
        continue;
      }
      spec.dataset = d["dataset"].as_string();
      if (spec.dataset.rfind("folder:", 0) == 0) spec.dataset = "folder:" + resolve(base, spec.dataset.substr(7));
      if (!is_known_dataset(spec.dataset)) {
        std::string known;
        for (const auto& k : known_datasets()) known += (known.empty() ? "" : ", ") + k;
        d["dataset"].fail("unknown dataset '" + spec.dataset + "' (known: " + known + ", folder:PATH)");
      }
      if (spec.dataset.rfind("folder:", 0) == 0) {
        const fs::path folder = spec.dataset.substr(7);
        if (!fs::is_directory(folder)) d["dataset"].fail("image folder not found: " + folder.string());
        bool any_image = false;
        for (const auto& cls : fs::directory_iterator(folder))
          if (cls.is_directory())
            for (const auto& f : fs::directory_iterator(cls.path())) {
              const std::string ext = f.path().extension().string();
              any_image = any_image || ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp";
            }
        if (!any_image) d["dataset"].fail("image folder holds no images (expected <class>/<image>.png|jpg): " + folder.string());
      }
      spec.transforms = parse_transforms(d["transforms"], registry);
      declared[name] = spec;
    }
  }

  const ConfigNode models = root["models"];
  if (!models.is_sequence() || models.size() == 0) models.fail("expected a non-empty list of models");
  std::set<std::string> model_names;
  for (std::size_t i = 0; i < models.size(); ++i) {
    const ConfigNode m = models[i];
    m.check_keys({"name", "path", "mean", "std", "input_size"});
    ModelEntry e;
    e.path = resolve(base, m["path"].as_string());
    if (!fs::is_regular_file(e.path)) m["path"].fail("model file not found: " + e.path);
    e.name = m.get("name", fs::path(e.path).stem().string());
    if (!model_names.insert(e.name).second) m.fail("duplicate model name '" + e.name + "'");
    if (m.has("mean") != m.has("std")) m.fail("give both mean and std, or neither");
    if (m.has("mean")) {
      e.has_preprocess = true;
      e.mean = m["mean"].as_double_list();
      e.std = m["std"].as_double_list();
      for (double s : e.std)
        if (!(s > 0)) m["std"].fail("expected positive numbers");
    }
    if (m.has("input_size")) {
      const auto size = m["input_size"].as_int_list();
      if (size.size() != 2 || size[0] < 1 || size[1] < 1) m["input_size"].fail("expected [height, width]");
      e.height = size[0];
      e.width = size[1];
    }
    cfg.models.push_back(e);
  }
  for (const auto& [domain, ref] : synthesis_model_refs)
    for (const auto& name : ref.as_string_list())
      if (!model_names.count(name)) {
        std::string known;
        for (const auto& m : cfg.models) known += (known.empty() ? "" : ", ") + m.name;
        ref.fail("domain '" + domain + "' synthesizes from model '" + name + "', which `models:` does not list (" + known + ")");
      }

  const ConfigNode calib = root["calibration"];
  calib.check_keys({"source", "domains", "count", "batch_size", "repeats", "histogram_bins"});
  if (calib.has("source") == calib.has("domains")) calib.fail("give either domains (a list) or source (one name)");
  const ConfigNode calib_list = calib.has("domains") ? calib["domains"] : calib["source"];
  for (std::size_t i = 0; i < (calib_list.is_sequence() ? calib_list.size() : 1); ++i)
    cfg.calibration_domains.push_back(resolve_domain(calib_list.is_sequence() ? calib_list[i] : calib_list, declared));
  if (cfg.calibration_domains.empty()) calib_list.fail("expected at least one calibration domain");
  if (calib.has("count")) {
    cfg.calibration_counts.clear();
    for (long long c : calib["count"].as_int_list()) {
      if (c < 1) calib["count"].fail("expected integers >= 1");
      cfg.calibration_counts.push_back(c);
    }
  }
  cfg.repeats = calib.get("repeats", cfg.repeats);
  if (cfg.repeats < 1) calib["repeats"].fail("expected an integer >= 1");
  cfg.batch_size = calib.get("batch_size", cfg.batch_size);
  if (cfg.batch_size < 1) calib["batch_size"].fail("expected an integer >= 1");
  cfg.histogram_bins = calib.get("histogram_bins", cfg.histogram_bins);
  if (cfg.histogram_bins < 16 || cfg.histogram_bins > (1 << 16)) calib["histogram_bins"].fail("expected an integer in [16, 65536]");

  const ConfigNode test = root["test"];
  test.check_keys({"domains", "count"});
  const ConfigNode test_list = test["domains"];
  for (std::size_t i = 0; i < (test_list.is_sequence() ? test_list.size() : 1); ++i) {
    const ConfigNode ref = test_list.is_sequence() ? test_list[i] : test_list;
    DomainSpec d = resolve_domain(ref, declared);
    if (!d.mixture.empty()) ref.fail("test domain '" + d.name + "' is a mixture; test on its parts");
    if (!d.synthesizer.empty()) ref.fail("test domain '" + d.name + "' is synthesized; test on real data");
    if (!is_labeled_dataset(d.dataset)) ref.fail("test domain '" + d.name + "' has no labels (dataset " + d.dataset + ")");
    d.line = ref.where();
    cfg.test_domains.push_back(d);
  }
  if (cfg.test_domains.empty()) test_list.fail("expected at least one test domain");
  cfg.test_count = test.get("count", cfg.test_count);
  if (cfg.test_count < 0) test["count"].fail("expected an integer >= 0 (0: all)");

  const ConfigNode q = root["quantization"];
  q.check_keys({"preset", "bits", "weight_range", "fold_bn", "overrides", "calibrators", "rounding", "passes"});
  cfg.preset = q.get("preset", cfg.preset);
  try {
    cfg.scheme = Scheme::load(cfg.preset.size() > 5 && cfg.preset.substr(cfg.preset.size() - 5) == ".yaml"
                                  ? resolve(base, cfg.preset) : cfg.preset,
                              (fs::path(config_dir()) / "presets").string());
  } catch (const Error& e) {
    q["preset"].fail(e.what());
  }
  const ConfigNode bits = q["bits"];
  if (!bits.is_sequence() || bits.size() == 0) bits.fail("expected a non-empty list like [w8a8, w4a8]");
  for (std::size_t i = 0; i < bits.size(); ++i) cfg.bits.push_back(parse_bits(bits[i]));
  cfg.weight_range = q.get("weight_range", cfg.weight_range);
  if (cfg.weight_range != "minmax" && cfg.weight_range != "mse")
    q["weight_range"].fail("expected one of: minmax, mse");
  cfg.fold_bn = q.get("fold_bn", cfg.fold_bn);
  if (q.has("overrides")) parse_overrides(q["overrides"], base, cfg.overrides);
  cfg.calibrators = parse_plugins(q["calibrators"], PluginKind::Calibrator, registry);
  // Calibration with no images ("none") only works with data-free calibrators.
  for (const DomainSpec& d : cfg.calibration_domains)
    if (d.dataset == "none")
      for (std::size_t i = 0; i < cfg.calibrators.size(); ++i) {
        const PluginChoice& c = cfg.calibrators[i];
        const PluginRecord& plugin = registry.get(PluginKind::Calibrator, c.name);
        const auto object = registry.create<Calibrator>(c.name, c.options);
        if (plugin_call(plugin, "input", [&] { return object->input(); }) != Calibrator::Input::Graph)
          q["calibrators"][i].fail("calibrator '" + c.label + "' observes data, but calibration domain '" + d.name +
                                   "' has no images (use a data-free calibrator such as bn_ranges)");
      }
  // An empty list means no pass (so `--set quantization.passes=[]` gives the baseline of a pass study).
  if (q.has("passes") && !(q["passes"].is_sequence() && q["passes"].size() == 0))
    cfg.passes = parse_plugins(q["passes"], PluginKind::GraphPass, registry);
  if (q.has("rounding")) {
    cfg.rounding = parse_plugins(q["rounding"], PluginKind::WeightOptimizer, registry);
  } else {
    const PluginRecord& nearest = registry.get(PluginKind::WeightOptimizer, "nearest");
    cfg.rounding.push_back({"nearest", "nearest", default_options(nearest.options)});
  }
  return cfg;
}

}  // namespace xdq
