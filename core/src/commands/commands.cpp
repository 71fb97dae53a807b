#include "xdq/commands/commands.h"

#include <ostream>
#include <utility>

#include "xdq/error.h"
#include "xdq/files.h"
#include "xdq/plugin/interfaces.h"
#include "xdq/report/analysis_report.h"
#include "xdq/report/experiment_report.h"
#include "xdq/report/results_tables.h"

namespace xdq {

namespace {
// Runs into `out_dir` under its lock (shared for one job of many, whose shard alone is written), then
// writes every file `report` renders at once, unless only one job was asked for.
template <class Run, class Report>
auto run_into(const std::string& out_dir, RunOptions options, Run&& run, Report&& report) {
  options.out_dir = out_dir;
  const PathLock lock(out_dir, options.only_job ? PathLock::Mode::Shared : PathLock::Mode::Exclusive, "into this folder");
  auto result = run(options);
  if (!options.only_job) write_files_atomically(out_dir, report(result));
  return result;
}
}  // namespace

ExperimentRun run_experiment_to(const ExperimentConfig& cfg, PluginRegistry& registry, const std::string& out_dir,
                                std::ostream& progress, RunOptions options) {
  return run_into(
      out_dir, std::move(options), [&](const RunOptions& o) { return run_experiment(cfg, registry, progress, o); },
      [&](const ExperimentRun& run) { return experiment_report(run); });
}

AnalysisRun run_analysis_to(const ExperimentConfig& cfg, PluginRegistry& registry, const std::string& out_dir,
                            std::ostream& progress, RunOptions options) {
  return run_into(
      out_dir, std::move(options), [&](const RunOptions& o) { return run_analysis(cfg, registry, progress, o); },
      [&](const AnalysisRun& run) { return analysis_report(run); });
}

ExperimentRun export_run_to(ExperimentConfig cfg, PluginRegistry& registry, const std::string& out,
                            const std::string& run_id, std::ostream& progress) {
  cfg.exports.runs = {{run_id, "", "", "", "", "--run"}};
  RunOptions options;
  options.only_run = run_id;
  options.export_dir = out;
  const PathLock lock(out, PathLock::Mode::Exclusive, "an export into this folder");
  ExperimentRun run = run_experiment(cfg, registry, progress, options);
  const RunResult& r = run.results.runs.at(0);
  if (!r.failed() && r.exported.error.empty())
    write_file_atomically(out + "/results.json", [&](std::ostream& f) { f << results_json(run.results); });
  return run;
}

std::vector<std::string> rank_overrides(PluginRegistry& registry, const std::string& target, const std::string& score) {
  registry.scan(plugin_search_dirs());  // the experiment's own plugin folders are read when it loads
  std::vector<std::string> declared;
  for (const PluginRecord& record : registry.records()) {
    if (record.kind != PluginKind::Scorer) continue;
    const auto scorer = registry.load<Scorer>(record.name, default_options(record.options));
    for (const ScoreInfo& info : scorer.call("scores", [](const Scorer& s) { return s.scores(); })) {
      if (info.name == score) return {"test.domains=[" + target + "]", "scoring.scorers=[" + record.name + "]"};
      declared.push_back(info.name);
    }
  }
  std::string names;
  for (const std::string& n : declared) names += (names.empty() ? "" : ", ") + n;
  throw ConfigError("--by " + score + ": no scorer plugin declares this score (declared: " + (names.empty() ? "none" : names) + ")");
}

}  // namespace xdq
