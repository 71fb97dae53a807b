// The xdq command: run, analyze, plugins, inspect, train.
#include <filesystem>
#include <iostream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "xdq/error.h"
#include "xdq/experiment/analysis_runner.h"
#include "xdq/experiment/runner.h"
#include "xdq/ir/describe.h"
#include "xdq/plugin/registry.h"
#include "xdq/train/trainer.h"

namespace {

nlohmann::ordered_json option_json(const xdq::OptionSpec& o) {
  nlohmann::ordered_json j;
  j["name"] = o.name;
  j["type"] = xdq::to_string(o.type);
  j["default"] = xdq::to_string(o.default_value);
  const std::string range = o.range_text();
  if (!range.empty()) j["range"] = range;
  j["doc"] = o.doc;
  return j;
}

int list_plugins(bool json, const std::vector<std::string>& extra_dirs) {
  auto& registry = xdq::global_registry();
  const auto failures = registry.scan(xdq::plugin_search_dirs(extra_dirs));
  if (json) {
    nlohmann::ordered_json out;
    out["plugins"] = nlohmann::ordered_json::array();
    for (const auto& r : registry.records()) {
      nlohmann::ordered_json p;
      p["kind"] = xdq::to_string(r.kind);
      p["name"] = r.name;
      p["version"] = r.version;
      p["path"] = r.path;
      p["summary"] = r.summary;
      p["options"] = nlohmann::ordered_json::array();
      for (const auto& o : r.options) p["options"].push_back(option_json(o));
      out["plugins"].push_back(p);
    }
    out["errors"] = failures;
    std::cout << out.dump(2) << std::endl;
  } else {
    for (const auto& r : registry.records()) {
      std::cout << xdq::to_string(r.kind) << "  " << r.name << "  " << r.version << "  " << r.path << "\n    "
                << r.summary << "\n";
      for (const auto& o : r.options) {
        std::cout << "    - " << o.name << " (" << xdq::to_string(o.type) << ", default " << xdq::to_string(o.default_value);
        if (!o.range_text().empty()) std::cout << ", " << o.range_text();
        std::cout << "): " << o.doc << "\n";
      }
    }
    for (const auto& f : failures) std::cerr << "xdq: warning: " << f << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"xdq: data-free and cross-domain post-training quantization"};
  app.require_subcommand(1);

  std::string experiment, out_dir;
  std::vector<std::string> run_sets;
  auto* run = app.add_subcommand("run", "run a YAML experiment; writes results into --out");
  run->add_option("experiment", experiment, "experiment YAML")->required();
  run->add_option("--out", out_dir, "output folder (default: runs/<experiment name>)");
  run->add_option("--set", run_sets, "override a config value: key.path=value (repeatable)");

  auto* analyze = app.add_subcommand("analyze", "outlier-layer analysis and mixed-precision fallback of an experiment's models");
  analyze->add_option("experiment", experiment, "experiment YAML (its `analysis:` section sets the analysis)")->required();
  analyze->add_option("--out", out_dir, "output folder (default: runs/<experiment name>)");
  analyze->add_option("--set", run_sets, "override a config value: key.path=value (repeatable)");

  bool json = false;
  std::vector<std::string> plugin_dirs;
  auto* plugins = app.add_subcommand("plugins", "list the plugins found, with their options");
  plugins->add_flag("--json", json, "machine-readable output");
  plugins->add_option("--path", plugin_dirs, "extra plugin folder (repeatable)");

  std::string model_path;
  auto* inspect = app.add_subcommand("inspect", "print a TorchScript model's layers, conv-BN pairs and blocks");
  inspect->add_option("model", model_path, "TorchScript file")->required();

  std::string recipe;
  std::vector<std::string> train_sets;
  auto* train = app.add_subcommand("train", "train a zoo model from a recipe and save it as TorchScript");
  train->add_option("recipe", recipe, "recipe YAML")->required();
  train->add_option("--set", train_sets, "override a recipe value: key.path=value (repeatable)");

  CLI11_PARSE(app, argc, argv);
  try {
    if (*run) {
      auto& registry = xdq::global_registry();
      const auto cfg = xdq::load_experiment(experiment, run_sets, registry);
      const std::string out = out_dir.empty() ? (std::filesystem::path("runs") / cfg.name).string() : out_dir;
      xdq::run_experiment_to(cfg, registry, out, std::cerr);
      std::cerr << "xdq: wrote " << out << "/{config.resolved.yaml, results.json, results.csv, report.md}" << std::endl;
    } else if (*analyze) {
      auto& registry = xdq::global_registry();
      const auto cfg = xdq::load_experiment(experiment, run_sets, registry);
      const std::string out = out_dir.empty() ? (std::filesystem::path("runs") / cfg.name).string() : out_dir;
      xdq::run_analysis_to(cfg, registry, out, std::cerr);
      std::cerr << "xdq: wrote " << out << "/{report.md, <model>_<bits>/analysis.json, ...}" << std::endl;
    } else if (*plugins) {
      return list_plugins(json, plugin_dirs);
    } else if (*inspect) {
      std::cout << xdq::describe_model(xdq::import_torchscript(model_path));
    } else if (*train) {
      xdq::train_from_recipe(recipe, train_sets);
    }
  } catch (const std::exception& e) {
    std::cerr << "xdq: error: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
