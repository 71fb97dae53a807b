#include "xdq/experiment/config.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <iostream>
#include <limits>
#include <thread>
#include <map>
#include <regex>
#include <set>

#include <ATen/Context.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include "scoring.h"

#include "xdq/data/dataset.h"
#include "xdq/data/sources.h"
#include "xdq/data/image_files.h"
#include "xdq/error.h"
#include "xdq/exec/convolution.h"
#include "xdq/export/export.h"
#include "xdq/plugin/interfaces.h"
#include "xdq/plugin/registry.h"

namespace xdq {

namespace fs = std::filesystem;

namespace {

// Paths in an experiment are relative to its file; kept absolute so a resolved config loads from anywhere.
std::string resolve(const fs::path& base, const std::string& p) {
  if (p.empty() || fs::path(p).is_absolute()) return p;
  return fs::absolute(base / p).lexically_normal().string();
}

// Names become parts of file names (report pictures, the default output folder runs/<experiment>):
// letters, digits and . _ + - only, not starting with a dot, so no name can point outside the output folder.
void check_name(const ConfigNode& node, const std::string& name, const char* what) {
  static const std::regex safe("[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,99}");
  if (!std::regex_match(name, safe))
    node.fail(std::string(what) + " '" + name + "': use letters, digits and . _ + - (at most 100, not starting with '.')");
}

BitSetting parse_bits(const ConfigNode& node) {
  // At most two digits each: a longer number cannot be a bit width, and never reaches an integer conversion.
  static const std::regex pattern("w([0-9]{1,2})a([0-9]{1,2})");
  std::smatch m;
  const std::string text = node.as_string();
  if (!std::regex_match(text, m, pattern))
    node.fail("expected a bit setting like w4a8 (weight bits 2-8, activation bits 2-16), got '" + text + "'");
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
    if (item.is_map() && item.has("severity")) t.severity = static_cast<int>(item["severity"].as_int_in(1, 5));
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

}  // namespace

PluginChoice parse_plugin(const ConfigNode& item, PluginKind kind, const PluginRegistry& registry) {
  PluginChoice choice;
  const ConfigNode name_node = item.is_map() ? item["name"] : item;
  choice.name = name_node.as_string();
  const PluginRecord* plugin = registry.find(kind, choice.name);
  if (!plugin) name_node.fail(registry.unknown_name_message(kind, choice.name));
  choice.label = item.is_map() ? item.get("label", choice.name) : choice.name;
  check_name(item.is_map() && item.has("label") ? item["label"] : item, choice.label, "label");
  choice.options = item.is_map() ? validate_options(item, plugin->options, {"name", "label"})
                                 : default_options(plugin->options);
  // Options that only make sense together are checked by the plugin's factory: try it now, not mid-run.
  try {
    registry.try_create(*plugin, choice.options);
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

namespace {

// ---- What loading needs besides the config: where relative paths start, the plugins, the domains so far.
struct LoadContext {
  fs::path base;
  PluginRegistry& registry;
  ConfigNode root;  // the whole file: keys that check a neighbour (calibration.source) read it here
  std::map<std::string, DomainSpec> declared;
  std::vector<std::pair<std::string, ConfigNode>> synthesis_model_refs;  // checked once models are read
};

// ---- One declaration per key: the loader, the resolved-config writer and `xdq keys` all read this table.
// Scalar keys carry an OptionSpec (type, default, range, doc) and are read by read_option; structured keys
// (lists, maps, plugin choices) carry a parse and an emit function. Keys are read in table order.
struct Key {
  std::string path;  // dotted: "calibration.batch_size"
  OptionSpec spec;   // scalar keys: everything; structured keys: the doc
  bool required = false;
  bool is_path = false;  // a string resolved against the experiment file's folder
  std::function<void(ExperimentConfig&, const OptionValue&)> set;
  std::function<OptionValue(const ExperimentConfig&)> get;
  std::function<void(const ConfigNode&, ExperimentConfig&, LoadContext&)> parse;
  std::function<YAML::Node(const ExperimentConfig&)> emit;  // undefined node: nothing to write
  bool structured() const { return static_cast<bool>(parse); }
};

void assign(int& to, const OptionValue& v) { to = static_cast<int>(std::get<std::int64_t>(v)); }
void assign(std::int64_t& to, const OptionValue& v) { to = std::get<std::int64_t>(v); }
void assign(std::uint64_t& to, const OptionValue& v) { to = static_cast<std::uint64_t>(std::get<std::int64_t>(v)); }
void assign(double& to, const OptionValue& v) { to = std::get<double>(v); }
void assign(bool& to, const OptionValue& v) { to = std::get<bool>(v); }
void assign(std::string& to, const OptionValue& v) { to = std::get<std::string>(v); }
OptionValue option_value(int v) { return std::int64_t{v}; }
OptionValue option_value(std::int64_t v) { return v; }
OptionValue option_value(std::uint64_t v) { return static_cast<std::int64_t>(v); }
OptionValue option_value(double v) { return v; }
OptionValue option_value(bool v) { return v; }
OptionValue option_value(const std::string& v) { return v; }

// A scalar key bound to a field of the config through `field` (a lambda returning a reference to it).
template <class Field>
Key scalar(std::string path, OptionSpec spec, Field field) {
  Key k;
  k.path = std::move(path);
  k.spec = std::move(spec);
  k.set = [field](ExperimentConfig& c, const OptionValue& v) { assign(field(c), v); };
  k.get = [field](const ExperimentConfig& c) { return option_value(field(const_cast<ExperimentConfig&>(c))); };
  return k;
}

Key structured(std::string path, std::string doc, std::function<void(const ConfigNode&, ExperimentConfig&, LoadContext&)> parse,
               std::function<YAML::Node(const ExperimentConfig&)> emit, bool required = false) {
  Key k;
  k.path = std::move(path);
  k.spec = OptionSpec::text(k.path.substr(k.path.rfind('.') + 1), "", std::move(doc));
  k.parse = std::move(parse);
  k.emit = std::move(emit);
  k.required = required;
  return k;
}

// A structured key bound to one member of the config (`field` returns a reference to it): its parse reads
// the key into that member, its emit writes the member, so neither sees the rest of the config.
template <class Field, class Parse, class Emit>
Key member(std::string path, std::string doc, Field field, Parse parse, Emit emit, bool required = false) {
  return structured(
      std::move(path), std::move(doc), [field, parse](const ConfigNode& n, auto& c, LoadContext& ctx) { parse(n, field(c), ctx); },
      [field, emit](const auto& c) { return emit(field(c)); }, required);
}

// Recursive on purpose: assigning one ConfigNode to another would assign the YAML nodes, which
// overwrites the tree they point into.
ConfigNode node_at(const ConfigNode& node, const std::string& path) {
  const std::size_t dot = path.find('.');
  if (dot == std::string::npos) return node[path];
  return node_at(node[path.substr(0, dot)], path.substr(dot + 1));
}

void set_at(YAML::Node& root, const std::string& path, const YAML::Node& value) {
  const std::size_t dot = path.find('.');
  if (dot == std::string::npos) {
    root[path] = value;
    return;
  }
  YAML::Node child = root[path.substr(0, dot)];
  set_at(child, path.substr(dot + 1), value);
}

// ---- Structured keys: reading and writing.
void parse_plugin_paths(const ConfigNode& node, std::vector<std::string>& paths, LoadContext& ctx) {
  if (node.defined())
    for (const auto& p : node.as_string_list()) paths.push_back(resolve(ctx.base, p));
  for (const auto& failure : ctx.registry.scan(plugin_search_dirs(paths)))
    std::cerr << "xdq: warning: " << failure << "\n";
}

// A folder:PATH domain's options, and its file list (class folders, classes file) checked now.
void parse_folder_options(const ConfigNode& d, DomainSpec& spec, const fs::path& base) {
  FolderOptions& o = spec.folder;
  if (d.has("classes")) {
    o.classes_file = resolve(base, d["classes"].as_string());
    if (!fs::is_regular_file(o.classes_file)) d["classes"].fail("classes file not found: " + o.classes_file);
  }
  const std::string missing = d.get("missing_classes", "error"), unreadable = d.get("unreadable", "error");
  if (missing != "error" && missing != "allow") d["missing_classes"].fail("expected error or allow");
  if (unreadable != "error" && unreadable != "skip") d["unreadable"].fail("expected error or skip");
  o.allow_missing_classes = missing == "allow";
  o.skip_unreadable = unreadable == "skip";
  try {
    list_image_folder(spec.dataset.substr(7), Split::Train, o);
  } catch (const Error& e) {
    d["dataset"].fail(e.what());
  }
}

DomainSpec parse_synthesized_domain(const ConfigNode& d, DomainSpec spec, LoadContext& ctx) {
  if (d.has("dataset") || d.has("transforms") || d.has("mix"))
    d.fail("a synthesized domain has no dataset, transforms or mix of its own");
  spec.synthesizer = {parse_plugin(d["synthesizer"], PluginKind::Synthesizer, ctx.registry)};
  spec.dataset = "synthesized";
  if (d.has("models")) {
    spec.synthesis_models = d["models"].as_string_list();
    ctx.synthesis_model_refs.emplace_back(spec.name, d["models"]);
  }
  return spec;
}

// Mixtures refer to domains declared before them, or to datasets.
DomainSpec parse_mixture_domain(const ConfigNode& d, DomainSpec spec, LoadContext& ctx) {
  const ConfigNode mix = d["mix"];
  mix.require_map();
  double total = 0;
  for (const auto& part : mix.keys()) {
    const double w = mix[part].as_double();
    if (!(w > 0)) mix[part].fail("expected a positive weight");
    if (!std::isfinite(total += w)) mix[part].fail("the weights' sum is not a finite number");
    spec.mixture.emplace_back(resolve_domain(mix.key_as_value(part), ctx.declared), w);
  }
  if (spec.mixture.empty()) mix.fail("expected at least one component");
  if (d.has("dataset") || d.has("transforms")) d.fail("a mixture has no dataset or transforms of its own");
  spec.dataset = "mixture";
  return spec;
}

DomainSpec parse_dataset_domain(const ConfigNode& d, DomainSpec spec, LoadContext& ctx) {
  spec.dataset = d["dataset"].as_string();
  const bool folder = spec.dataset.rfind("folder:", 0) == 0;
  if (folder) spec.dataset = "folder:" + resolve(ctx.base, spec.dataset.substr(7));
  if (!is_known_dataset(spec.dataset)) {
    std::string known;
    for (const auto& k : known_datasets()) known += (known.empty() ? "" : ", ") + k;
    d["dataset"].fail("unknown dataset '" + spec.dataset + "' (known: " + known + ", folder:PATH)");
  }
  if (folder) parse_folder_options(d, spec, ctx.base);
  spec.transforms = parse_transforms(d["transforms"], ctx.registry);
  return spec;
}

void parse_domains(const ConfigNode& domains, LoadContext& ctx) {
  if (!domains.defined()) return;
  domains.require_map();
  for (const auto& name : domains.keys()) {
    const ConfigNode d = domains[name];
    d.check_keys({"dataset", "transforms", "mix", "synthesizer", "models", "classes", "missing_classes", "unreadable"});
    check_name(d, name, "domain name");
    if (!d.has("dataset") || d["dataset"].as_string().rfind("folder:", 0) != 0)
      for (const char* key : {"classes", "missing_classes", "unreadable"})
        if (d.has(key)) d[key].fail("only a folder:PATH dataset has this option");
    DomainSpec spec;
    spec.name = name;
    spec.declared = true;
    if (d.has("synthesizer")) {
      ctx.declared[name] = parse_synthesized_domain(d, spec, ctx);
      continue;
    }
    if (d.has("models")) d["models"].fail("only a synthesized domain lists models");
    ctx.declared[name] = d.has("mix") ? parse_mixture_domain(d, spec, ctx) : parse_dataset_domain(d, spec, ctx);
  }
}

// mean/std, each a list of positive std values; from `node` (a model entry or its preprocess map).
void parse_normalization(const ConfigNode& node, ModelEntry& e) {
  if (node.has("mean") != node.has("std")) node.fail("give both mean and std, or neither");
  if (!node.has("mean")) return;
  if (e.has_preprocess) node["mean"].fail("mean/std given twice (the model entry and its preprocess)");
  e.has_preprocess = true;
  e.mean = node["mean"].as_double_list();
  e.std = node["std"].as_double_list();
  for (double s : e.std)
    if (!(s > 0)) node["std"].fail("expected positive numbers");
}

void set_input_size(const ConfigNode& node, ModelEntry& e, const std::vector<long long>& size) {
  if (size.size() != 2 || size[0] < 1 || size[1] < 1 || size[0] > 16384 || size[1] > 16384)
    node.fail("expected [height, width], each in [1, 16384]");
  if (e.size_declared && (e.input.height != size[0] || e.input.width != size[1]))
    node.fail("input size " + std::to_string(size[0]) + "x" + std::to_string(size[1]) + " contradicts the declared " +
              std::to_string(e.input.height) + "x" + std::to_string(e.input.width));
  e.input.height = size[0];
  e.input.width = size[1];
  e.size_declared = true;
  if (e.size_where.empty()) e.size_where = node.where();
}

// preprocess: imagenet | {preset, resize, crop, interpolation, mean, std, channels}: a map's keys override
// its preset's.
void parse_preprocess(const ConfigNode& p, ModelEntry& e) {
  if (p.is_scalar() && p.as_string() != "imagenet") p.fail("unknown preprocess preset '" + p.as_string() + "' (known: imagenet)");
  if (!p.is_scalar()) p.check_keys({"preset", "resize", "crop", "interpolation", "mean", "std", "channels"});
  const std::string preset = p.is_scalar() ? p.as_string() : p.get("preset", "");
  if (!preset.empty() && preset != "imagenet") p["preset"].fail("unknown preprocess preset '" + preset + "' (known: imagenet)");
  const bool normalization_declared = e.has_preprocess;
  if (preset == "imagenet") {  // torchvision's evaluation transform for ImageNet classifiers
    if (normalization_declared) p.fail("mean/std given twice (the model entry and the imagenet preset)");
    e.input.resize = 256;
    e.input.interpolation = Interpolation::Bilinear;
    e.has_preprocess = true;
    e.mean = {0.485, 0.456, 0.406};
    e.std = {0.229, 0.224, 0.225};
  }
  long long crop = preset == "imagenet" ? 224 : 0;
  if (p.is_scalar()) {
    set_input_size(p, e, {crop, crop});
    return;
  }
  if (p.has("mean") && !normalization_declared) e.has_preprocess = false;  // the map's own replaces the preset's
  parse_normalization(p, e);
  if (p.has("resize")) {
    e.input.resize = p["resize"].as_int();
    if (e.input.resize < 1 || e.input.resize > 16384) p["resize"].fail("expected a shorter-side length in [1, 16384]");
  }
  if (p.has("interpolation")) {
    const std::string name = p["interpolation"].as_string();
    const auto all = {Interpolation::Bilinear, Interpolation::Bicubic, Interpolation::Nearest};
    const auto it = std::find_if(all.begin(), all.end(), [&](Interpolation i) { return name == interpolation_name(i); });
    if (it == all.end()) p["interpolation"].fail("expected bilinear, bicubic or nearest");
    e.input.interpolation = *it;
  }
  if (p.has("channels")) {
    const std::string c = p["channels"].as_string();
    if (c != "rgb" && c != "bgr") p["channels"].fail("expected rgb or bgr");
    e.input.bgr = c == "bgr";
  }
  if (p.has("crop")) {
    const ConfigNode c = p["crop"];
    set_input_size(c, e, c.is_scalar() ? std::vector<long long>{c.as_int(), c.as_int()} : c.as_int_list());
  } else if (crop > 0) {
    set_input_size(p, e, {crop, crop});
  } else if (e.input.resize > 0) {
    p.fail("a resize needs a crop (the input size the model reads)");
  }
}

ModelEntry parse_model(const ConfigNode& m, const fs::path& base) {
  m.check_keys({"name", "path", "sha256", "mean", "std", "input_size", "preprocess"});
  ModelEntry e;
  e.path = resolve(base, m["path"].as_string());
  if (!fs::is_regular_file(e.path)) m["path"].fail("model file not found: " + e.path);
  if (m.has("sha256")) {
    e.sha256 = m["sha256"].as_string();
    const std::string actual = file_sha256(e.path);
    if (actual != e.sha256)
      m["sha256"].fail("model file " + e.path + " has SHA-256 " + actual + ", not the pinned " + e.sha256);
  }
  e.name = m.get("name", fs::path(e.path).stem().string());
  parse_normalization(m, e);
  if (m.has("input_size")) set_input_size(m["input_size"], e, m["input_size"].as_int_list());
  if (m.has("preprocess")) parse_preprocess(m["preprocess"], e);
  return e;
}

void parse_models(const ConfigNode& models, std::vector<ModelEntry>& out, LoadContext& ctx) {
  if (!models.is_sequence() || models.size() == 0) models.fail("expected a non-empty list of models");
  std::set<std::string> names;
  for (std::size_t i = 0; i < models.size(); ++i) {
    out.push_back(parse_model(models[i], ctx.base));
    check_name(models[i], out.back().name, "model name");
    if (!names.insert(out.back().name).second) models[i].fail("duplicate model name '" + out.back().name + "'");
  }
  for (const auto& [domain, ref] : ctx.synthesis_model_refs)
    for (const auto& name : ref.as_string_list())
      if (!names.count(name)) {
        std::string known;
        for (const auto& m : out) known += (known.empty() ? "" : ", ") + m.name;
        ref.fail("domain '" + domain + "' synthesizes from model '" + name + "', which `models:` does not list (" + known + ")");
      }
}

// calibration.domains (a list) or calibration.source (one name): read here, from the section.
void parse_calibration_domains(const ConfigNode&, std::vector<DomainSpec>& domains, LoadContext& ctx) {
  const ConfigNode calib = ctx.root["calibration"];
  if (calib.has("source") == calib.has("domains")) calib.fail("give either domains (a list) or source (one name)");
  const ConfigNode list = calib.has("domains") ? calib["domains"] : calib["source"];
  for (std::size_t i = 0; i < (list.is_sequence() ? list.size() : 1); ++i)
    domains.push_back(resolve_domain(list.is_sequence() ? list[i] : list, ctx.declared));
  if (domains.empty()) list.fail("expected at least one calibration domain");
}

void parse_calibration_counts(const ConfigNode& node, std::vector<std::int64_t>& counts, LoadContext&) {
  if (!node.defined()) return;
  counts.clear();
  for (long long c : node.as_int_list()) {
    if (c < 1 || c > 10'000'000) node.fail("expected integers in [1, 10000000], got " + std::to_string(c));
    counts.push_back(c);
  }
  if (counts.empty()) node.fail("expected at least one count");
}

// calibration.target_sample: {domain, count}.
void parse_target_sample(const ConfigNode& node, CalibrationSettings::TargetSample& sample, LoadContext& ctx) {
  if (!node.defined()) return;
  node.require_map();
  node.check_keys({"domain", "count"});
  sample.domain = resolve_domain(node["domain"], ctx.declared);
  const DomainSpec& d = sample.domain;
  if (!d.synthesizer.empty() || d.dataset == "none") node["domain"].fail("a target sample is real images of the target domain");
  sample.count = node.has("count") ? node["count"].as_int_in(1, 1'000'000) : 64;
}

// calibration.selector: one plugin or a list (a sweep); checked against the calibration domains, the
// counts, the pool size and the target sample.
void parse_selectors(const ConfigNode& node, CalibrationSettings& calibration, LoadContext& ctx) {
  const ConfigNode section = ctx.root["calibration"], target = section["target_sample"];
  if (!node.defined()) {
    if (target.defined()) target.fail("no calibration.selector reads a target sample");
    return;
  }
  calibration.selectors = node.is_sequence() ? parse_plugins(node, PluginKind::Selector, ctx.registry)
                                     : std::vector<PluginChoice>{parse_plugin(node, PluginKind::Selector, ctx.registry)};
  bool reads_target = false;
  for (std::size_t i = 0; i < calibration.selectors.size(); ++i) {
    const PluginChoice& c = calibration.selectors[i];
    const bool needs = ctx.registry.load<Selector>(c.name, c.options).call("needs_target", [](const Selector& s) { return s.needs_target(); });
    reads_target = reads_target || needs;
    if (needs && calibration.target_sample.count == 0)
      (node.is_sequence() ? node[i] : node).fail("selector '" + c.label + "' needs a target sample: calibration.target_sample: {domain, count}");
  }
  if (target.defined() && !reads_target) target.fail("no calibration.selector reads a target sample (target_match does)");
  const ConfigNode domains = section.has("domains") ? section["domains"] : section["source"];
  for (const DomainSpec& d : calibration.domains)
    if (!d.synthesizer.empty() || d.dataset == "none")
      domains.fail("calibration domain '" + d.name + "' has no pool of real images for calibration.selector to choose from");
  for (std::int64_t count : calibration.counts)
    if (calibration.pool_size > 0 && count > calibration.pool_size)
      section["count"].fail("a selector chooses " + std::to_string(count) + " images from a pool of " +
                                            std::to_string(calibration.pool_size) + " (calibration.pool_size)");
}

void parse_test_domains(const ConfigNode& list, std::vector<DomainSpec>& domains, LoadContext& ctx) {
  for (std::size_t i = 0; i < (list.is_sequence() ? list.size() : 1); ++i) {
    const ConfigNode ref = list.is_sequence() ? list[i] : list;
    DomainSpec d = resolve_domain(ref, ctx.declared);
    if (!d.mixture.empty()) ref.fail("test domain '" + d.name + "' is a mixture; test on its parts");
    if (!d.synthesizer.empty()) ref.fail("test domain '" + d.name + "' is synthesized; test on real data");
    if (!is_labeled_dataset(d.dataset)) ref.fail("test domain '" + d.name + "' has no labels (dataset " + d.dataset + ")");
    d.line = ref.where();
    domains.push_back(d);
  }
  if (domains.empty()) list.fail("expected at least one test domain");
}

void parse_preset(const ConfigNode& node, QuantizationSettings& q, LoadContext& ctx) {
  if (node.defined()) q.preset = node.as_string();
  if (q.preset.size() > 5 && q.preset.substr(q.preset.size() - 5) == ".yaml") q.preset = resolve(ctx.base, q.preset);
  try {
    q.scheme = Scheme::load(q.preset, (fs::path(config_dir()) / "presets").string());
  } catch (const Error& e) {
    (node.defined() ? node : ctx.root["quantization"]).fail(e.what());
  }
}

void parse_bit_settings(const ConfigNode& bits, std::vector<BitSetting>& out, LoadContext&) {
  if (!bits.is_sequence() || bits.size() == 0) bits.fail("expected a non-empty list like [w8a8, w4a8]");
  for (std::size_t i = 0; i < bits.size(); ++i) out.push_back(parse_bits(bits[i]));
}

void parse_calibrators(const ConfigNode& list, std::vector<PluginChoice>& calibrators, LoadContext& ctx) {
  calibrators = parse_plugins(list, PluginKind::Calibrator, ctx.registry);
}

void parse_rounding(const ConfigNode& list, std::vector<PluginChoice>& rounding, LoadContext& ctx) {
  if (list.defined()) {
    rounding = parse_plugins(list, PluginKind::WeightOptimizer, ctx.registry);
    return;
  }
  const PluginRecord& nearest = ctx.registry.get(PluginKind::WeightOptimizer, "nearest");
  rounding.push_back({"nearest", "nearest", default_options(nearest.options)});
}

// An empty list means no pass (so `--set quantization.passes=[]` gives the baseline of a pass study).
void parse_passes(const ConfigNode& list, std::vector<PluginChoice>& passes, LoadContext& ctx) {
  if (list.defined() && !(list.is_sequence() && list.size() == 0))
    passes = parse_plugins(list, PluginKind::GraphPass, ctx.registry);
}

// An empty list means no scoring; score names must be unique across the scorers.
void parse_scorers(const ConfigNode& list, std::vector<PluginChoice>& scorers, LoadContext& ctx) {
  if (!list.defined() || (list.is_sequence() && list.size() == 0)) return;
  scorers = parse_plugins(list, PluginKind::Scorer, ctx.registry);
  try {
    declared_scores(ctx.registry, scorers);
  } catch (const Error& e) {
    list.fail(e.what());
  }
}

// A value as a YAML scalar of its own type, so that it reads back exactly.
YAML::Node option_yaml(const OptionValue& value) {
  if (auto b = std::get_if<bool>(&value)) return YAML::Node(*b);
  if (auto i = std::get_if<std::int64_t>(&value)) return YAML::Node(*i);
  if (auto d = std::get_if<double>(&value)) return YAML::Node(*d);
  return YAML::Node(std::get<std::string>(value));
}

void emit_options(YAML::Node& node, const Options& options) {
  for (const auto& [key, value] : options.values()) node[key] = option_yaml(value);
}

YAML::Node plugin_yaml(const PluginChoice& c) {
  YAML::Node item;
  item["name"] = c.name;
  if (c.label != c.name) item["label"] = c.label;
  emit_options(item, c.options);
  return item;
}

YAML::Node plugin_list_yaml(const std::vector<PluginChoice>& choices) {
  YAML::Node list(YAML::NodeType::Sequence);
  for (const auto& c : choices) list.push_back(plugin_yaml(c));
  return list;
}

YAML::Node names_yaml(const std::vector<DomainSpec>& domains) {
  YAML::Node list(YAML::NodeType::Sequence);
  for (const auto& d : domains) list.push_back(d.name);
  return list;
}

// A declared domain and, first, the declared domains it mixes (a mixture refers to earlier domains).
void emit_domain(YAML::Node& domains, const DomainSpec& d) {
  // Looked up through a const node: a non-const operator[] would reserve the key's place in the map.
  if (!d.declared || static_cast<const YAML::Node&>(domains)[d.name]) return;
  YAML::Node node(YAML::NodeType::Map);
  if (!d.synthesizer.empty()) {
    node["synthesizer"] = plugin_yaml(d.synthesizer.front());
    for (const auto& m : d.synthesis_models) node["models"].push_back(m);
  } else if (!d.mixture.empty()) {
    for (const auto& [part, weight] : d.mixture) {
      emit_domain(domains, part);
      node["mix"][part.name] = weight;
    }
  } else {
    node["dataset"] = d.dataset;
    if (!d.folder.classes_file.empty()) node["classes"] = d.folder.classes_file;
    if (d.folder.allow_missing_classes) node["missing_classes"] = "allow";
    if (d.folder.skip_unreadable) node["unreadable"] = "skip";
    for (const auto& t : d.transforms) {
      YAML::Node tn;
      tn["name"] = t.name;
      tn["severity"] = t.severity;
      emit_options(tn, t.options);
      node["transforms"].push_back(tn);
    }
  }
  domains[d.name] = node;
}

// Lists of scalars on one line ([28, 28]), the way people write them.
void flow_scalar_lists(YAML::Node node) {
  if (node.IsSequence()) {
    bool scalars = true;
    for (const auto& item : node) scalars = scalars && item.IsScalar();
    if (scalars) node.SetStyle(YAML::EmitterStyle::Flow);
  }
  if (node.IsSequence())
    for (auto item : node) flow_scalar_lists(item);
  if (node.IsMap())
    for (auto item : node) flow_scalar_lists(item.second);
}


// The declared domains that calibration and test name.
YAML::Node domains_yaml(const CalibrationSettings& calibration, const TestSettings& test) {
  YAML::Node domains(YAML::NodeType::Map);
  for (const auto* list : {&calibration.domains, &test.domains})
    for (const auto& d : *list) emit_domain(domains, d);
  if (calibration.target_sample.count > 0) emit_domain(domains, calibration.target_sample.domain);
  return domains.size() > 0 ? domains : YAML::Node();
}

YAML::Node models_yaml(const std::vector<ModelEntry>& entries) {
  YAML::Node models(YAML::NodeType::Sequence);
  for (const auto& m : entries) {
    YAML::Node mn;
    mn["name"] = m.name;
    mn["path"] = m.path;
    mn["sha256"] = m.sha256.empty() ? file_sha256(m.path) : m.sha256;
    if (m.size_declared) mn["input_size"] = std::vector<std::int64_t>{m.input.height, m.input.width};
    if (m.has_preprocess) {
      mn["mean"] = m.mean;
      mn["std"] = m.std;
    }
    if (m.input.resize > 0 || m.input.bgr) {
      YAML::Node p;
      if (m.input.resize > 0) p["resize"] = m.input.resize;
      p["crop"] = std::vector<std::int64_t>{m.input.height, m.input.width};
      p["interpolation"] = interpolation_name(m.input.interpolation);
      p["channels"] = m.input.bgr ? "bgr" : "rgb";
      mn["preprocess"] = p;
    }
    models.push_back(mn);
  }
  return models;
}

YAML::Node overrides_yaml(const std::vector<LayerOverride>& overrides) {
  if (overrides.empty()) return YAML::Node();
  YAML::Node list(YAML::NodeType::Sequence);
  for (const auto& o : overrides) {
    YAML::Node on;
    on["layers"] = o.layers;
    if (o.w_bits) on["w_bits"] = *o.w_bits;
    if (o.a_bits) on["a_bits"] = *o.a_bits;
    list.push_back(on);
  }
  return list;
}

YAML::Node bits_yaml(const std::vector<BitSetting>& bits) {
  YAML::Node list(YAML::NodeType::Sequence);
  for (const auto& b : bits) list.push_back(b.label());
  return list;
}

// export.runs: run ids, or maps of the fields a run must match.
void parse_export_runs(const ConfigNode& node, std::vector<ExportSettings::Selector>& runs, LoadContext&) {
  if (!node.defined()) return;
  if (!node.is_sequence()) node.fail("expected a list of run ids or {model, bits, calibrator, rounding} maps");
  for (std::size_t i = 0; i < node.size(); ++i) {
    const ConfigNode item = node[i];
    ExportSettings::Selector s;
    s.where = item.where();
    if (item.is_map()) {
      item.check_keys({"model", "bits", "calibrator", "rounding"});
      s.model = item.get("model", "");
      s.bits = item.get("bits", "");
      s.calibrator = item.get("calibrator", "");
      s.rounding = item.get("rounding", "");
    } else {
      s.id = item.as_string();
    }
    runs.push_back(s);
  }
}

YAML::Node export_runs_yaml(const std::vector<ExportSettings::Selector>& runs) {
  if (runs.empty()) return YAML::Node();
  YAML::Node list(YAML::NodeType::Sequence);
  for (const auto& s : runs) {
    if (!s.id.empty()) {
      list.push_back(s.id);
      continue;
    }
    YAML::Node m(YAML::NodeType::Map);
    for (const auto& [key, value] : {std::pair{"model", s.model}, {"bits", s.bits}, {"calibrator", s.calibrator}, {"rounding", s.rounding}})
      if (!value.empty()) m[key] = value;
    list.push_back(m);
  }
  return list;
}

void parse_export_formats(const ConfigNode& node, std::vector<std::string>& formats, LoadContext&) {
  if (!node.defined()) return;
  formats = node.as_string_list();
  const auto& known = export_format_names();
  for (std::size_t i = 0; i < formats.size(); ++i)
    if (std::find(known.begin(), known.end(), formats[i]) == known.end())
      (node.is_sequence() ? node[i] : node).fail("unknown export format '" + formats[i] + "' (torchscript, onnx, encodings, tensorrt)");
}

constexpr double kUnbounded = std::numeric_limits<double>::infinity();

// The run: name, seed, threads, failure policy, plugin and data locations.
void add_run_keys(std::vector<Key>& k) {
  using S = OptionSpec;
  Key name = scalar("experiment", S::text("experiment", "", "name of the experiment (default output folder runs/<name>)"),
                    [](auto& c) -> auto& { return c.name; });
  name.required = true;
  k.push_back(name);
  k.push_back(scalar("seed", S::integer("seed", 0, "seed of calibration subsets, synthesis and learned rounding").range(0, kUnbounded),
                     [](auto& c) -> auto& { return c.execution.seed; }));
  k.push_back(scalar("threads", S::integer("threads", 0, "intra-op threads (0: all cores)").range(0, 4096),
                     [](auto& c) -> auto& { return c.execution.threads; }));
  k.push_back(scalar("jobs", S::integer("jobs", 1, "jobs (model x calibration set) at a time, sharing the threads").range(1, 4096),
                     [](auto& c) -> auto& { return c.execution.jobs; }));
  k.push_back(scalar("memory_format",
                     S::text("memory_format", "auto", "memory layout of every engine: auto (channels-last on the CPU), contiguous (NCHW), channels_last (NHWC)")
                         .one_of({"auto", "contiguous", "channels_last"}),
                     [](auto& c) -> auto& { return c.execution.memory_format; }));
  k.push_back(scalar("convolution",
                     S::text("convolution", "direct", "convolution kernels of every engine: direct (ATen's), winograd (oneDNN's F(4x4, 3x3) for the 3x3 stride-1 convolutions it covers on AVX-512 CPUs: faster, float32 rounding of its own)")
                         .one_of({"direct", "winograd"}),
                     [](auto& c) -> auto& { return c.execution.convolution; }));
  k.push_back(scalar("device", S::text("device", "cpu", "where models run: cpu, cuda, cuda:N (data stays on the CPU)"),
                     [](auto& c) -> auto& { return c.execution.device; }));
  k.push_back(scalar("on_error", S::text("on_error", "continue", "a failed run: recorded and the sweep goes on, or stop").one_of({"continue", "stop"}),
                     [](auto& c) -> auto& { return c.execution.on_error; }));
  k.push_back(scalar("isolation", S::text("isolation", "none", "process: each job of xdq run runs in a child process, so a job that crashes (a plugin's segfault) is recorded as failed and the sweep goes on").one_of({"none", "process"}),
                     [](auto& c) -> auto& { return c.execution.isolation; }));
  k.push_back(member("plugins.paths", "extra plugin folders, searched before $XDQ_PLUGIN_PATH and the build's",
                     [](auto& c) -> auto& { return c.execution.plugin_paths; }, parse_plugin_paths,
                     [](const std::vector<std::string>& paths) { return paths.empty() ? YAML::Node() : YAML::Node(paths); }));
  for (const auto& [key, doc] : {std::pair{"fashion_mnist", "folder of the Fashion-MNIST IDX files (default: Debian's package)"},
                                 {"opencv_samples", "folder of OpenCV's sample data (default: opencv-doc's)"},
                                 {"sklearn_digits", "scikit-learn's digits.csv.gz (default: python3-sklearn's)"},
                                 {"cache", "cache folder (default: $XDQ_CACHE_DIR, else ~/.cache/xdq)"}}) {
    const std::string field = key;
    Key d;
    d.path = std::string("data.") + key;
    d.spec = S::text(key, "", doc);
    d.is_path = true;
    d.set = [field](auto& c, const OptionValue& v) { assign(c.data_location(field), v); };
    d.get = [field](const auto& c) { return option_value(const_cast<std::decay_t<decltype(c)>&>(c).data_location(field)); };
    k.push_back(d);
  }
}

// What is calibrated on and tested on: domains, models, calibration and test sets.
void add_data_keys(std::vector<Key>& k) {
  using S = OptionSpec;
  const auto calibration = [](auto& c) -> auto& { return c.calibration; };
  k.push_back(structured("domains", "named domains: {dataset, transforms, classes, missing_classes, unreadable} | {mix: {domain: weight}} | {synthesizer, models}",
                         [](const ConfigNode& n, auto&, LoadContext& ctx) { parse_domains(n, ctx); },
                         [](const auto& c) { return domains_yaml(c.calibration, c.test); }));
  k.push_back(member("models", "TorchScript models: [{name, path, sha256, input_size, mean, std, preprocess: imagenet | {preset, resize, crop, interpolation, mean, std, channels}}]",
                     [](auto& c) -> auto& { return c.models; }, parse_models, models_yaml, true));
  k.push_back(member("calibration.domains", "calibration domains (A), train split unless a split is named",
                     [](auto& c) -> auto& { return c.calibration.domains; }, parse_calibration_domains, names_yaml));
  k.push_back(member("calibration.source", "one calibration domain (instead of domains)", calibration,
                     [](const ConfigNode&, auto&, LoadContext&) {}, [](const auto&) { return YAML::Node(); }));
  k.push_back(member("calibration.count", "calibration-set sizes (a sweep)", [](auto& c) -> auto& { return c.calibration.counts; },
                     parse_calibration_counts, [](const std::vector<std::int64_t>& counts) { return YAML::Node(counts); }));
  k.push_back(scalar("calibration.repeats", S::integer("repeats", 1, "calibration sets drawn per size, seeds seed, seed+1, ...").range(1, 1000),
                     [](auto& c) -> auto& { return c.calibration.repeats; }));
  k.push_back(scalar("calibration.min_images", S::integer("min_images", 0, "fewest images a calibration set may hold when its source has fewer than the count asked (0: the count asked)").range(0, kUnbounded),
                     [](auto& c) -> auto& { return c.calibration.min_images; }));
  k.push_back(scalar("calibration.stream_above_mb", S::integer("stream_above_mb", 2048, "a folder calibration set or selection pool whose float32 images exceed this many MiB is decoded batch by batch at each pass instead of held in memory (0: always)").range(0, kUnbounded),
                     [](auto& c) -> auto& { return c.calibration.stream_above_mb; }));
  k.push_back(scalar("calibration.batch_size", S::integer("batch_size", 256, "images per forward pass").range(1, 65536),
                     [](auto& c) -> auto& { return c.calibration.batch_size; }));
  k.push_back(scalar("calibration.histogram_bins", S::integer("histogram_bins", 2048, "histogram bins per sign of the activation statistics").range(16, 65536),
                     [](auto& c) -> auto& { return c.calibration.histogram_bins; }));
  k.push_back(scalar("calibration.pool_size", S::integer("pool_size", 10000, "images a selector chooses from, drawn from the calibration domain (0: its whole split)").range(0, kUnbounded),
                     [](auto& c) -> auto& { return c.calibration.pool_size; }));
  k.push_back(member("calibration.target_sample", "{domain, count}: unlabeled target-domain images a selector reads (train split unless named)",
                     [](auto& c) -> auto& { return c.calibration.target_sample; }, parse_target_sample,
                     [](const CalibrationSettings::TargetSample& sample) {
                       if (sample.count == 0) return YAML::Node();
                       YAML::Node n;
                       n["domain"] = sample.domain.name;
                       n["count"] = sample.count;
                       return n;
                     }));
  k.push_back(member("calibration.selector", "selector plugin(s) choosing the calibration set from the pool (a list: a sweep)",
                     calibration, parse_selectors, [](const CalibrationSettings& c) {
                       return c.selectors.empty() ? YAML::Node() : plugin_list_yaml(c.selectors);
                     }));
  k.push_back(member("test.domains", "test domains (B), test split unless a split is named",
                     [](auto& c) -> auto& { return c.test.domains; }, parse_test_domains, names_yaml));
  k.push_back(scalar("test.count", S::integer("count", 0, "test images per domain (0: all)").range(0, kUnbounded),
                     [](auto& c) -> auto& { return c.test.count; }));
}

// How it is quantized.
void add_quantization_keys(std::vector<Key>& k) {
  using S = OptionSpec;
  const auto plugins = [](const std::vector<PluginChoice>& list) { return plugin_list_yaml(list); };
  k.push_back(member("quantization.preset", "backend preset (configs/presets) or a preset file",
                     [](auto& c) -> auto& { return c.quantization; }, parse_preset,
                     [](const QuantizationSettings& q) { return YAML::Node(q.preset); }));
  k.push_back(member("quantization.bits", "bit settings, e.g. [w8a8, w4a4]", [](auto& c) -> auto& { return c.quantization.bits; },
                     parse_bit_settings, bits_yaml));
  k.push_back(scalar("quantization.weight_range", S::text("weight_range", "minmax", "weight range method").one_of({"minmax", "mse", "quantile_search"}),
                     [](auto& c) -> auto& { return c.quantization.weight_range; }));
  k.push_back(scalar("quantization.fold_bn", S::flag("fold_bn", true, "fold BatchNorm into the preceding conv before quantizing"),
                     [](auto& c) -> auto& { return c.quantization.fold_bn; }));
  k.push_back(member("quantization.overrides", "per-layer bits: [{layers, w_bits, a_bits} | {include: file}]",
                     [](auto& c) -> auto& { return c.quantization.overrides; },
                     [](const ConfigNode& n, std::vector<LayerOverride>& overrides, LoadContext& ctx) {
                       if (n.defined()) parse_layer_overrides(n, ctx.base.string(), overrides);
                     },
                     overrides_yaml));
  k.push_back(member("quantization.calibrators", "activation range calibrators (plugins)",
                     [](auto& c) -> auto& { return c.quantization.calibrators; }, parse_calibrators, plugins));
  k.push_back(member("quantization.rounding", "weight rounding optimizers (plugins; default nearest)",
                     [](auto& c) -> auto& { return c.quantization.rounding; }, parse_rounding, plugins));
  k.push_back(member("quantization.passes", "graph passes (plugins), each at its declared stage",
                     [](auto& c) -> auto& { return c.quantization.passes; }, parse_passes, plugins));
}

// Diagnostics, `xdq analyze`, and what a resolved config carries.
void add_report_keys(std::vector<Key>& k) {
  using S = OptionSpec;
  k.push_back(scalar("diagnostics.layer_shift_images", S::integer("layer_shift_images", 0, "images per domain for per-layer shift tables (0: off)").range(0, kUnbounded),
                     [](auto& c) -> auto& { return c.test.layer_shift_images; }));
  k.push_back(member("scoring.scorers", "scorer plugins: label-free predictions of each run's top-1 on each test domain (results.json scores)",
                     [](auto& c) -> auto& { return c.test.scorers; }, parse_scorers,
                     [](const std::vector<PluginChoice>& list) { return list.empty() ? YAML::Node() : plugin_list_yaml(list); }));
  k.push_back(scalar("scoring.target_count", S::integer("target_count", 256, "unlabeled images per test domain the scorers read (train split)").range(2, kUnbounded),
                     [](auto& c) -> auto& { return c.test.scoring_target_count; }));
  k.push_back(scalar("analysis.images", S::integer("images", 1000, "held-out images per test domain").range(1, kUnbounded),
                     [](auto& c) -> auto& { return c.analysis.images; }));
  k.push_back(scalar("analysis.layerwise", S::text("layerwise", "both", "what one layer's turn quantizes").one_of({"weights", "activation", "both"}),
                     [](auto& c) -> auto& { return c.analysis.layerwise; }));
  k.push_back(scalar("analysis.target_drop", S::number("target_drop", 0.5, "mixed precision: accepted top-1 drop (points)").range(0, 100),
                     [](auto& c) -> auto& { return c.analysis.target_drop; }));
  k.push_back(scalar("analysis.size_budget", S::integer("size_budget", 0, "mixed precision: weight bytes at most (0: no budget)").range(0, kUnbounded),
                     [](auto& c) -> auto& { return c.analysis.size_budget; }));
  k.push_back(scalar("analysis.fallback_bits", S::integer("fallback_bits", 8, "bits of a raised layer's weights and input").range(2, 8),
                     [](auto& c) -> auto& { return c.analysis.fallback_bits; }));
  k.push_back(member("export.runs", "runs whose quantized model is written to <out>/exports: [all | run id | {model, bits, calibrator, rounding}]",
                     [](auto& c) -> auto& { return c.exports.runs; }, parse_export_runs, export_runs_yaml));
  k.push_back(member("export.formats", "what an exported run writes: torchscript, onnx, encodings, tensorrt",
                     [](auto& c) -> auto& { return c.exports.formats; }, parse_export_formats,
                     [](const std::vector<std::string>& formats) { return YAML::Node(formats); }));
  k.push_back(scalar("export.runtime", S::text("runtime", "none", "run the exported model in an int8 runtime on the test domains (runtime_top1)").one_of({"none", "opencv", "onnxruntime"}),
                     [](auto& c) -> auto& { return c.exports.runtime; }));
  k.push_back(scalar("export.timing", S::flag("timing", false, "onnxruntime: time model_fp32.onnx against model.onnx at batch 1 and 64, 1 and 2 threads (report.md)"),
                     [](auto& c) -> auto& { return c.exports.timing; }));
  k.push_back(scalar("export.timing_rounds", S::integer("timing_rounds", 20, "interleaved rounds per timing (medians)").range(1, 100000),
                     [](auto& c) -> auto& { return c.exports.timing_rounds; }));
  k.push_back(member("provenance", "written by xdq into config.resolved.yaml (what a run measured); not read",
                     [](auto& c) -> auto& { return c.name; }, [](const ConfigNode&, auto&, LoadContext&) {},
                     [](const auto&) { return YAML::Node(); }));
}

const std::vector<Key>& experiment_keys() {
  static const std::vector<Key> keys = [] {
    std::vector<Key> k;
    add_run_keys(k);
    add_data_keys(k);
    add_quantization_keys(k);
    add_report_keys(k);
    return k;
  }();
  return keys;
}

// The keys a section may hold, from the table: "" is the top level.
std::vector<std::string> keys_of_section(const std::string& section) {
  std::vector<std::string> out;
  const std::string prefix = section.empty() ? "" : section + ".";
  for (const Key& k : experiment_keys()) {
    if (k.path.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string rest = k.path.substr(prefix.size());
    const std::string first = rest.substr(0, rest.find('.'));
    if (std::find(out.begin(), out.end(), first) == out.end()) out.push_back(first);
  }
  return out;
}

void check_sections(const ConfigNode& root) {
  root.check_keys(keys_of_section(""));
  for (const std::string& section : keys_of_section("")) {
    const bool is_section = std::any_of(experiment_keys().begin(), experiment_keys().end(),
                                        [&](const Key& k) { return k.path.rfind(section + ".", 0) == 0; });
    if (is_section && root.has(section)) root[section].check_keys(keys_of_section(section));
  }
  for (const char* required : {"calibration", "test", "quantization"}) root[required].require_map();
}

void read_key(const Key& key, const ConfigNode& root, ExperimentConfig& cfg, LoadContext& ctx) {
  const ConfigNode node = node_at(root, key.path);
  if (key.required && !node.defined()) node.fail("missing value (" + key.spec.doc + ")");
  if (key.structured()) return key.parse(node, cfg, ctx);
  OptionValue value = node.defined() ? read_option(node, key.spec) : key.spec.default_value;
  if (key.is_path) value = resolve(ctx.base, std::get<std::string>(value));
  key.set(cfg, value);
}

// export: the formats can express the preset, and timing has ONNX Runtime to time (the runs are checked
// against the plan by load_experiment).
void check_export_formats(const ExportSettings& exports, const Scheme& scheme, const ConfigNode& root) {
  const ConfigNode formats = root["export"]["formats"];
  for (const auto& f : exports.formats)
    if (const std::string limit = export_format_limit(f, scheme); !limit.empty())
      (formats.defined() ? formats : root["quantization"]["preset"]).fail("export format " + f + ": " + limit);
  if (exports.timing && exports.runtime != "onnxruntime")
    root["export"]["timing"].fail("times ONNX Runtime: needs export.runtime: onnxruntime (it is '" + exports.runtime + "')");
}

// convolution: winograd needs oneDNN's API in this build, and the CPU.
void check_convolution(const ExecutionSettings& execution, const ConfigNode& root) {
  const ConfigNode node = root["convolution"];
  try {
    if (conv_algorithm(execution.convolution) == ConvAlgorithm::Direct) return;
  } catch (const Error& e) {
    node.fail(e.what());
  }
  if (execution.device != "cpu") node.fail("Winograd convolutions run on the CPU (device is " + execution.device + ")");
}

// Calibration with no images ("none") only works with data-free calibrators.
void check_data_free_calibrators(const CalibrationSettings& calibration, const QuantizationSettings& quantization,
                                 const ConfigNode& root, const PluginRegistry& registry) {
  for (const DomainSpec& d : calibration.domains)
    if (d.dataset == "none")
      for (std::size_t i = 0; i < quantization.calibrators.size(); ++i) {
        const PluginChoice& c = quantization.calibrators[i];
        const auto plugin = registry.load<Calibrator>(c.name, c.options);
        if (plugin.call("input", [](const Calibrator& object) { return object.input(); }) != Calibrator::Input::Graph)
          root["quantization"]["calibrators"][i].fail("calibrator '" + c.label + "' observes data, but calibration domain '" +
                                                      d.name + "' has no images (use a data-free calibrator such as bn_ranges)");
      }
}

// Checks across keys, once all are read. More threads than cores only adds switching: a few times the
// cores is the useful bound.
void check_after_reading(const ExperimentConfig& cfg, const PluginRegistry& registry) {
  check_name(cfg.root["experiment"], cfg.name, "experiment name");
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (cfg.execution.threads > 4 * cores)
    cfg.root["threads"].fail("expected at most " + std::to_string(4 * cores) + " (4 x the " + std::to_string(cores) +
                             " cores of this machine), got " + std::to_string(cfg.execution.threads));
  parse_device(cfg.execution.device, cfg.root["device"]);  // a device this LibTorch and machine have
  check_convolution(cfg.execution, cfg.root);
  check_data_free_calibrators(cfg.calibration, cfg.quantization, cfg.root, registry);
  check_export_formats(cfg.exports, cfg.quantization.scheme, cfg.root);
}

}  // namespace

bool ExportSettings::selects(const std::string& id, const std::string& model, const std::string& bits,
                                        const std::string& calibrator, const std::string& rounding) const {
  return std::any_of(runs.begin(), runs.end(), [&](const Selector& s) {
    if (!s.id.empty()) return s.id == "all" || s.id == id;
    return (s.model.empty() || s.model == model) && (s.bits.empty() || s.bits == bits) &&
           (s.calibrator.empty() || s.calibrator == calibrator) && (s.rounding.empty() || s.rounding == rounding);
  });
}

std::string& ExperimentConfig::data_location(const std::string& key) {
  if (key == "fashion_mnist") return data.fashion_mnist;
  if (key == "opencv_samples") return data.opencv_samples;
  if (key == "sklearn_digits") return data.sklearn_digits;
  if (key == "cache") return data.cache;
  throw Error("no data location '" + key + "'");
}

ExperimentConfig read_experiment(ConfigNode root, const std::string& file, const std::string& base_dir,
                                 const std::vector<std::string>& overrides, PluginRegistry& registry) {
  ExperimentConfig cfg;
  cfg.file = file;
  for (const auto& kv : overrides) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos) throw Error("--set " + kv + ": expected key.path=value");
    root.set_path(kv.substr(0, eq), kv.substr(eq + 1));
  }
  cfg.root = root;
  LoadContext ctx{base_dir, registry, root, {}, {}};
  check_sections(root);
  for (const Key& key : experiment_keys()) read_key(key, root, cfg, ctx);
  check_after_reading(cfg, registry);
  return cfg;
}

c10::Device parse_device(const std::string& device, const ConfigNode& node) {
  const std::regex form("cpu|cuda(:[0-9]{1,3})?");
  if (!std::regex_match(device, form)) node.fail("expected cpu, cuda or cuda:N, got '" + device + "'");
  if (device == "cpu") return c10::Device(c10::kCPU);
  if (!at::hasCUDA())
    node.fail("the LibTorch this xdq is built with (" + std::string(TORCH_VERSION) +
              ") has no CUDA, or no GPU is visible; build against a CUDA LibTorch (tools/gpu-check.sh) or use device: cpu");
  const c10::Device parsed(device);
  const int count = static_cast<int>(torch::cuda::device_count());
  if ((parsed.has_index() ? parsed.index() : 0) >= count)
    node.fail(device + ": this machine has " + std::to_string(count) + " CUDA devices");
  return parsed;
}

BitSetting parse_bit_setting(const ConfigNode& node) { return parse_bits(node); }

std::string resolved_config_yaml(const ExperimentConfig& cfg, const YAML::Node& provenance) {
  YAML::Node root;
  for (const Key& key : experiment_keys()) {
    if (!key.structured() && key.is_path && std::get<std::string>(key.get(cfg)).empty()) continue;  // default location
    const YAML::Node value = key.structured() ? key.emit(cfg) : option_yaml(key.get(cfg));
    if (value.IsDefined() && !value.IsNull()) set_at(root, key.path, value);
  }
  if (provenance.IsDefined() && !provenance.IsNull()) root["provenance"] = provenance;
  flow_scalar_lists(root);
  YAML::Emitter out;
  out.SetDoublePrecision(17);
  out << root;
  return std::string("# Resolved by xdq: every default filled in; `xdq run` on this file repeats the experiment.\n"
                     "# Models are pinned by SHA-256; provenance: what the run measured about its inputs (not read\n"
                     "# back), its hashes FNV-1a 64.\n") +
         out.c_str() + "\n";
}

std::vector<ConfigKeyDoc> experiment_key_docs() {
  std::vector<ConfigKeyDoc> out;
  for (const Key& k : experiment_keys())
    out.push_back({k.path, k.structured() ? "structured" : to_string(k.spec.type),
                   k.structured() ? "" : to_string(k.spec.default_value), k.spec.range_text(), k.spec.doc, k.required});
  return out;
}

}  // namespace xdq
