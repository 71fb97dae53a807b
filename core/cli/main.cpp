// The xdq command: run, analyze, plugins, inspect, train.
#include <unistd.h>

#include <filesystem>
#include <iostream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "xdq/error.h"
#include "xdq/experiment/plan.h"
#include "xdq/report/analysis_report.h"
#include "xdq/report/experiment_report.h"
#include "xdq/ir/describe.h"
#include "xdq/plugin/registry.h"
#include "xdq/train/trainer.h"

namespace {

// Exit status: 0 ok, 1 runtime failure, 2 usage or config error (nothing ran), 3 a sweep that finished
// with failed runs (results written, failures recorded in them).
constexpr int kExitOk = 0, kExitRuntime = 1, kExitUsage = 2, kExitFailedRuns = 3;

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

// The output folder is checked before any work: results that cannot be written are refused at once,
// not after the run. It is not created here, so a refused run leaves nothing behind.
void check_output_folder(const std::string& out) {
  namespace fs = std::filesystem;
  const fs::path path = fs::absolute(out).lexically_normal();
  std::error_code ec;
  if (fs::exists(path, ec) && !fs::is_directory(path, ec))
    throw xdq::Error(out + ": the output folder exists and is not a folder");
  fs::path existing = path;
  while (!existing.empty() && !fs::exists(existing, ec)) existing = existing.parent_path();
  if (!fs::is_directory(existing, ec) || ::access(existing.c_str(), W_OK) != 0)
    throw xdq::Error(out + ": the output folder cannot be written (" + existing.string() + " is not a writable folder)");
}

void print_keys() {
  for (const auto& k : xdq::experiment_key_docs()) {
    std::cout << k.path << " (" << k.type;
    if (k.required) std::cout << ", required";
    if (!k.default_value.empty()) std::cout << ", default " << k.default_value;
    if (!k.range.empty()) std::cout << ", " << k.range;
    std::cout << "): " << k.doc << "\n";
  }
}

int run_experiment_command(const xdq::ExperimentConfig& cfg, const std::string& out, bool dry_run) {
  if (dry_run) {
    std::cout << xdq::describe_plan(cfg, xdq::plan_experiment(cfg));
    return kExitOk;
  }
  const auto results = xdq::run_experiment_to(cfg, xdq::global_registry(), out, std::cerr);
  std::cerr << "xdq: wrote " << out << "/{config.resolved.yaml, results.json, results.csv, report.md}" << std::endl;
  if (results.failed_runs() == 0) return kExitOk;
  std::cerr << "xdq: " << results.failed_runs() << " of " << results.runs.size()
            << " runs failed (see results.json and report.md)" << std::endl;
  return kExitFailedRuns;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"xdq: data-free and cross-domain post-training quantization"};
  app.require_subcommand(1);

  std::string experiment, out_dir;
  std::vector<std::string> run_sets;
  bool dry_run = false;
  auto* run = app.add_subcommand("run", "run a YAML experiment; writes results into --out");
  run->add_flag("--dry-run", dry_run, "print the plan (jobs, runs, cells, work) and stop; reads no model or data");
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

  auto* keys = app.add_subcommand("keys", "list every key an experiment file may hold (type, default, range, doc)");

  std::string model_path;
  auto* inspect = app.add_subcommand("inspect", "print a TorchScript model's layers, conv-BN pairs and blocks");
  inspect->add_option("model", model_path, "TorchScript file")->required();

  std::string recipe;
  std::vector<std::string> train_sets;
  auto* train = app.add_subcommand("train", "train a zoo model from a recipe and save it as TorchScript");
  train->add_option("recipe", recipe, "recipe YAML")->required();
  train->add_option("--set", train_sets, "override a recipe value: key.path=value (repeatable)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }
  // Config errors (the experiment file, --set, plugin options) are usage errors: nothing ran.
  xdq::ExperimentConfig cfg;
  std::string out;
  try {
    if (*run || *analyze) {
      cfg = xdq::load_experiment(experiment, run_sets, xdq::global_registry());
      out = out_dir.empty() ? (std::filesystem::path("runs") / cfg.name).string() : out_dir;
      if (!dry_run) check_output_folder(out);
    }
  } catch (const std::exception& e) {
    std::cerr << "xdq: error: " << e.what() << std::endl;
    return kExitUsage;
  }
  try {
    if (*run) {
      return run_experiment_command(cfg, out, dry_run);
    } else if (*analyze) {
      xdq::run_analysis_to(cfg, xdq::global_registry(), out, std::cerr);
      std::cerr << "xdq: wrote " << out << "/{report.md, <model>_<bits>/analysis.json, ...}" << std::endl;
    } else if (*keys) {
      print_keys();
    } else if (*plugins) {
      return list_plugins(json, plugin_dirs);
    } else if (*inspect) {
      std::cout << xdq::describe_model(xdq::import_torchscript(model_path));
    } else if (*train) {
      xdq::train_from_recipe(recipe, train_sets);
    }
  } catch (const std::exception& e) {
    std::cerr << "xdq: error: " << e.what() << std::endl;
    return kExitRuntime;
  }
  return kExitOk;
}
