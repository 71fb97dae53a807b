// The xdq command: run, analyze, export, rank, submit, merge, plugins, keys, inspect, train.

#include <chrono>
#include <filesystem>
#include <iomanip>
#include <optional>
#include <iostream>

#include <CLI/CLI.hpp>
#include <boost/dll/runtime_symbol_info.hpp>

#include "recorded_stderr.h"
#include "submit.h"
#include "xdq/error.h"
#include "xdq/commands/commands.h"
#include "xdq/experiment/load.h"
#include "xdq/experiment/plan.h"
#include "xdq/files.h"
#include "xdq/report/analysis_report.h"
#include "xdq/report/experiment_report.h"
#include "xdq/report/plugin_catalog.h"
#include "xdq/report/results_tables.h"
#include "xdq/report/score_validation.h"
#include "xdq/ir/describe.h"
#include "xdq/plugin/registry.h"
#include "xdq/train/trainer.h"
#include "xdq/version.h"

#include <torch/version.h>

namespace {

// Exit status: 0 ok, 1 runtime failure, 2 usage or config error (nothing ran), 3 a sweep that finished
// with failed runs (results written, failures recorded in them).
constexpr int kExitOk = 0, kExitRuntime = 1, kExitUsage = 2, kExitFailedRuns = 3;

int list_plugins(bool json, const std::vector<std::string>& extra_dirs) {
  auto& registry = xdq::global_registry();
  const auto failures = registry.scan(xdq::plugin_search_dirs(extra_dirs));
  if (json) {
    std::cout << xdq::plugin_catalog_json(registry, failures) << std::endl;
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

void print_keys() {
  for (const auto& k : xdq::experiment_key_docs()) {
    std::cout << k.path << " (" << k.type;
    if (k.required) std::cout << ", required";
    if (!k.default_value.empty()) std::cout << ", default " << k.default_value;
    if (!k.range.empty()) std::cout << ", " << k.range;
    std::cout << "): " << k.doc << "\n";
  }
}

// Exit status of a finished sweep, with a line on what is missing or failed.
int missing_jobs_status(const std::vector<std::string>& missing) {
  if (missing.empty()) return kExitOk;
  std::cerr << "xdq: " << missing.size() << " jobs have no shard yet:";
  for (const auto& id : missing) std::cerr << " " << id;
  std::cerr << std::endl;
  return kExitFailedRuns;
}

int sweep_status(const xdq::ExperimentRun& run) {
  int status = missing_jobs_status(run.missing_jobs);
  const std::size_t failed = run.results.failed_runs();
  if (failed > 0) {
    std::cerr << "xdq: " << failed << " of " << run.results.runs.size() << " runs failed (see results.json and report.md)"
              << std::endl;
    status = kExitFailedRuns;
  }
  return status;
}

// Everything the command line sets, and the subcommands it chose.
struct Args {
  std::string experiment, out_dir, merge_dir, model_path, recipe, run_id, target, score;
  std::vector<std::string> sets, plugin_dirs;
  bool dry_run = false, json = false, use_slurm = false, quiet = false;
  std::optional<std::size_t> job;
  xdq::cli::SlurmOptions slurm;
  CLI::App *run = nullptr, *analyze = nullptr, *submit = nullptr, *merge = nullptr, *plugins = nullptr, *keys = nullptr,
           *inspect = nullptr, *train = nullptr, *exporter = nullptr, *rank = nullptr;
};

// The commands that read an experiment (run, analyze, export, submit): the experiment loaded and checked
// once, and the folder they write.
class ExperimentCommand {
 public:
  explicit ExperimentCommand(const Args& a) : a_(a) {}
  // Config errors (the experiment file, --set, plugin options, the output folder) are usage errors:
  // nothing ran, nothing was written. False after printing one.
  bool load();
  int execute();

 private:
  int run(bool dry_run);
  int analyze(bool dry_run);
  int export_run();
  int rank();
  int recorded();

  const Args& a_;
  xdq::ExperimentConfig cfg_;
  std::string out_;
};

int ExperimentCommand::run(bool dry_run) {
  if (dry_run) {
    std::cout << xdq::describe_plan(cfg_, xdq::plan_experiment(cfg_));
    return kExitOk;
  }
  xdq::RunOptions options;
  options.only_job = a_.job;
  const auto finished = xdq::run_experiment_to(cfg_, xdq::global_registry(), out_, std::cerr, options);
  if (a_.job)
    std::cerr << "xdq: job " << *a_.job << " kept in " << out_ << "/jobs (xdq merge " << out_ << " gathers the jobs)" << std::endl;
  else
    std::cerr << "xdq: wrote " << out_ << "/{config.resolved.yaml, results.json, results.csv, report.md}" << std::endl;
  return sweep_status(finished);
}

int ExperimentCommand::analyze(bool dry_run) {
  if (dry_run) {
    const auto ids = xdq::analysis_job_ids(cfg_.models, cfg_.quantization.bits);
    std::cout << ids.size() << " analysis jobs (one per model and bit setting):\n";
    for (const auto& id : ids) std::cout << "  " << id << "\n";
    return kExitOk;
  }
  xdq::RunOptions options;
  options.only_job = a_.job;
  const auto finished = xdq::run_analysis_to(cfg_, xdq::global_registry(), out_, std::cerr, options);
  if (a_.job)
    std::cerr << "xdq: analysis job " << *a_.job << " kept in " << out_ << "/analysis_jobs (xdq merge " << out_
              << " gathers the jobs)" << std::endl;
  else
    std::cerr << "xdq: wrote " << out_ << "/{analysis.md, <model>_<bits>/analysis.json, ...}" << std::endl;
  return missing_jobs_status(finished.missing_jobs);
}

// One run, computed alone and exported into the folder with its results (results.json beside the artefacts).
int ExperimentCommand::export_run() {
  xdq::ExperimentRun run;
  {
    xdq::cli::RecordedStderr progress(a_.quiet);  // --quiet: the progress is not shown
    run = xdq::export_run_to(cfg_, xdq::global_registry(), out_, a_.run_id, std::cerr);
  }
  const xdq::RunResult& r = run.results.runs.at(0);
  const std::string error = r.failed() ? r.error : r.exported.error;
  if (!error.empty()) {
    std::cerr << "xdq: error: " << r.id << ": " << error << std::endl;
    return kExitRuntime;
  }
  std::cerr << "xdq: wrote " << out_ << "/{";
  for (const auto& f : r.exported.files) std::cerr << f << ", ";
  std::cerr << "results.json}" << std::endl;
  if (!r.exported.runtime_error.empty()) {
    std::cerr << "xdq: runtime check failed: " << r.exported.runtime_error << std::endl;
    return kExitFailedRuns;
  }
  return kExitOk;
}

// The experiment's calibration sets (its jobs) scored against the target's unlabeled sample and ranked,
// without evaluating a test image; the ranking on standard output, and in --out as rank.md and rank.json.
int ExperimentCommand::rank() {
  const auto start = std::chrono::steady_clock::now();
  xdq::RunOptions options;
  options.score_only = true;
  xdq::ExperimentRun run;
  {
    xdq::cli::RecordedStderr progress(a_.quiet);
    run = xdq::run_experiment(cfg_, xdq::global_registry(), std::cerr, options);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto rankings = xdq::rank_calibration_sets(run.results, a_.score);
  std::cout << xdq::rankings_markdown(rankings);
  if (!a_.out_dir.empty())
    xdq::write_files_atomically(a_.out_dir, {{"rank.md", xdq::rankings_markdown(rankings)}, {"rank.json", xdq::rankings_json(rankings)}});
  std::cerr << "xdq: ranked " << run.results.runs.size() << " runs' calibration sets in " << std::fixed << std::setprecision(1)
            << seconds << " s" << std::endl;
  return sweep_status(run);
}

// The shards in `dir` (a sweep's jobs/, an analysis' analysis_jobs/, or both), gathered into its result
// files; jobs without a shard are named.
int merge_command(const std::string& dir) {
  namespace fs = std::filesystem;
  xdq::RunOptions options;
  options.merge_only = true;
  int status = kExitOk;
  bool found = false;
  const auto recorded = [&](const char* kind) { return fs::path(dir) / kind / "config.yaml"; };
  if (fs::exists(recorded("jobs"))) {
    found = true;
    const auto cfg = xdq::load_experiment(recorded("jobs").string(), {}, xdq::global_registry());
    const auto run = xdq::run_experiment_to(cfg, xdq::global_registry(), dir, std::cerr, options);
    std::cerr << "xdq: merged " << run.results.runs.size() << " runs into " << dir << std::endl;
    status = std::max(status, sweep_status(run));
  }
  if (fs::exists(recorded("analysis_jobs"))) {
    found = true;
    const auto cfg = xdq::load_experiment(recorded("analysis_jobs").string(), {}, xdq::global_registry());
    const auto run = xdq::run_analysis_to(cfg, xdq::global_registry(), dir, std::cerr, options);
    std::cerr << "xdq: merged " << run.settings.size() << " analyses into " << dir << std::endl;
    status = std::max(status, missing_jobs_status(run.missing_jobs));
  }
  if (!found) throw xdq::ConfigError(dir + ": holds no job shards (no jobs/config.yaml or analysis_jobs/config.yaml)");
  return status;
}


CLI::App* experiment_command(CLI::App& app, const char* name, const char* doc, Args& a) {
  CLI::App* cmd = app.add_subcommand(name, doc);
  cmd->add_option("experiment", a.experiment, "experiment YAML")->required();
  cmd->add_option("--out", a.out_dir, "output folder (default: runs/<experiment name>)");
  cmd->add_option("--set", a.sets, "override a config value: key.path=value (repeatable)");
  cmd->add_flag("--quiet", a.quiet, "print errors only (the progress is still kept in the output folder's run.log)");
  return cmd;
}

void define_commands(CLI::App& app, Args& a) {
  a.run = experiment_command(app, "run", "run a YAML experiment; writes results into --out", a);
  a.run->add_flag("--dry-run", a.dry_run, "print the plan (jobs, runs, cells, work) and stop; reads no model or data");
  a.run->add_option("--job", a.job, "run only job K of the plan (see --dry-run); its shard goes to --out/jobs");
  a.analyze = experiment_command(app, "analyze", "outlier-layer analysis and mixed-precision fallback (the `analysis:` section)", a);
  a.analyze->add_flag("--dry-run", a.dry_run, "print the analysis jobs (one per model and bit setting) and stop");
  a.analyze->add_option("--job", a.job, "analyze only job K (see --dry-run); its shard goes to --out/analysis_jobs");
  a.exporter = experiment_command(app, "export", "compute one run and write its quantized model (export.formats) into --out", a);
  a.exporter->add_option("--run", a.run_id, "the run's id (xdq run --dry-run lists them)")->required();
  a.exporter->get_option("--out")->required();
  a.submit = experiment_command(app, "submit", "run an experiment's jobs as a Slurm job array, then merge them", a);
  a.submit->add_flag("--slurm", a.use_slurm, "submit with sbatch (the one scheduler supported)")->required();
  a.submit->add_flag("--analyze", a.slurm.analyze, "submit the experiment's analysis jobs (xdq analyze) instead of its runs");
  a.submit->add_option("--partition", a.slurm.partition, "Slurm partition");
  a.submit->add_option("--time", a.slurm.time, "time limit of each array task (Slurm format)");
  a.submit->add_option("--cpus-per-task", a.slurm.cpus_per_task, "CPUs (and intra-op threads) of each task")->check(CLI::Range(1, 4096));
  a.submit->add_option("--gpus-per-task", a.slurm.gpus_per_task, "GPUs of each task")->check(CLI::Range(0, 64));
  a.submit->add_option("--max-parallel", a.slurm.max_parallel, "array tasks running at once (0: no limit)")->check(CLI::Range(0, 100000));
  a.submit->add_option("--sbatch-arg", a.slurm.sbatch_args, "extra #SBATCH argument, verbatim (repeatable)");
  a.submit->add_flag("--dry-run", a.slurm.dry_run, "write the scripts into --out/slurm and submit nothing");
  a.rank = experiment_command(app, "rank", "rank the experiment's calibration sets for one target domain by a label-free score, testing nothing", a);
  a.rank->add_option("--target", a.target, "the test domain to rank for (its unlabeled train-split sample is read)")->required();
  a.rank->add_option("--by", a.score, "the score to rank by (a score a scorer plugin declares; see docs/predictors.md)")->required();
  a.merge = app.add_subcommand("merge", "gather the job shards of DIR into its results files; names missing jobs");
  a.merge->add_option("dir", a.merge_dir, "output folder of a sweep (holds jobs/)")->required();
  a.plugins = app.add_subcommand("plugins", "list the plugins found, with their options");
  a.plugins->add_flag("--json", a.json, "machine-readable output");
  a.plugins->add_option("--path", a.plugin_dirs, "extra plugin folder (repeatable)");
  a.keys = app.add_subcommand("keys", "list every key an experiment file may hold (type, default, range, doc)");
  a.inspect = app.add_subcommand("inspect", "print a TorchScript model's layers, conv-BN pairs and blocks");
  a.inspect->add_option("model", a.model_path, "TorchScript file")->required();
  a.train = app.add_subcommand("train", "train a zoo model from a recipe and save it as TorchScript");
  a.train->add_option("recipe", a.recipe, "recipe YAML")->required();
  a.train->add_option("--set", a.sets, "override a recipe value: key.path=value (repeatable)");
}

bool ExperimentCommand::load() {
  try {
    std::vector<std::string> sets = a_.sets;
    if (*a_.rank) {
      const auto ranking = xdq::rank_overrides(xdq::global_registry(), a_.target, a_.score);
      sets.insert(sets.end(), ranking.begin(), ranking.end());
    }
    cfg_ = xdq::load_experiment(a_.experiment, sets, xdq::global_registry());
    out_ = a_.out_dir.empty() ? (std::filesystem::path("runs") / cfg_.name).string() : a_.out_dir;
    if (!a_.dry_run && (!*a_.rank || !a_.out_dir.empty())) xdq::check_output_folder(out_);
    if (*a_.submit) xdq::cli::check_slurm_options(a_.slurm, out_);
    if ((*a_.run || *a_.analyze) && !a_.dry_run)
      xdq::check_resumable([this] { return xdq::resolved_config_yaml(cfg_); }, out_, *a_.run ? xdq::ShardKind::Run : xdq::ShardKind::Analysis);
    if (*a_.exporter) xdq::job_of_run(xdq::plan_experiment(cfg_), a_.run_id);
    return true;
  } catch (const std::exception& e) {
    std::cerr << "xdq: error: " << e.what() << std::endl;
    return false;
  }
}

// A run or an analysis, its standard error kept as <out>/run.log (analyze.log) unless one job ran alone.
int ExperimentCommand::recorded() {
  xdq::cli::RecordedStderr recorded(a_.quiet);
  const int status = *a_.run ? run(false) : analyze(false);
  if (!a_.job)
    xdq::write_file_atomically((std::filesystem::path(out_) / (*a_.run ? "run.log" : "analyze.log")).string(),
                               [&](std::ostream& log) { log << recorded.text(); });
  return status;
}

int ExperimentCommand::execute() {
  if ((*a_.run || *a_.analyze) && !a_.dry_run) return recorded();
  if (*a_.run) return run(a_.dry_run);
  if (*a_.analyze) return analyze(a_.dry_run);
  if (*a_.exporter) return export_run();
  if (*a_.rank) return rank();
  return xdq::cli::submit_to_slurm(cfg_, out_, boost::dll::program_location().string(), a_.slurm);
}

// The commands that read no experiment.
int execute(const Args& a) {
  if (*a.merge) return merge_command(a.merge_dir);
  if (*a.plugins) return list_plugins(a.json, a.plugin_dirs);
  if (*a.keys) {
    print_keys();
  } else if (*a.inspect) {
    std::cout << xdq::describe_model(xdq::import_torchscript(a.model_path));
  } else if (*a.train) {
    xdq::train_from_recipe(a.recipe, a.sets);
  }
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"xdq: data-free and cross-domain post-training quantization"};
  app.set_version_flag("--version", std::string("xdq ") + XDQ_VERSION + " (LibTorch " + TORCH_VERSION + ")");
  app.require_subcommand(1);
  Args args;
  define_commands(app, args);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }
  const bool reads_experiment = *args.run || *args.analyze || *args.submit || *args.exporter || *args.rank;
  ExperimentCommand command(args);
  if (reads_experiment && !command.load()) return kExitUsage;
  try {
    return reads_experiment ? command.execute() : execute(args);
  } catch (const xdq::ConfigError& e) {
    std::cerr << "xdq: error: " << e.what() << std::endl;
    return kExitUsage;
  } catch (const c10::Error& e) {  // LibTorch's own message, without the C++ stack it carries
    std::cerr << "xdq: error: " << e.what_without_backtrace() << std::endl;
    return kExitRuntime;
  } catch (const std::exception& e) {
    std::cerr << "xdq: error: " << e.what() << std::endl;
    return kExitRuntime;
  }
}
