#pragma once
// `xdq run`: the plan of the experiment executed job by job (the pipeline), results gathered in plan
// order. Returns data only; report/experiment_report.h turns it into files.
#include <functional>
#include <iosfwd>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "xdq/experiment/config.h"
#include "xdq/experiment/plan.h"
#include "xdq/experiment/results.h"

namespace xdq {

struct ExperimentRun {
  ResultsSource source;
  ExperimentResults results;
  std::string resolved_config;                    // config.resolved.yaml
  std::map<std::string, std::string> data_files;  // files runs produced (reconstruction loss curves, CSV)
  std::vector<SampleImages> samples;
  std::vector<std::string> missing_jobs;  // merge_only: jobs of the plan with no shard
  // Synthesized calibration sets: the file name the report gives each (with the set's content hash) and
  // the cache file holding it.
  std::vector<std::pair<std::string, std::string>> synthesized_sets;
};

struct RunOptions {
  // Keeps every finished job as a shard in out_dir/jobs (see shards.h): a run into a folder that holds
  // shards of the same config reads them instead of running those jobs again. "": in memory only.
  std::string out_dir;
  // Only this job of the plan (a cluster array task); the returned run holds that job alone.
  std::optional<std::size_t> only_job;
  // Run nothing: gather the shards in out_dir (`xdq merge`); jobs without one are listed as missing.
  bool merge_only = false;
  // Where `export:` writes (default out_dir/exports, one folder per run; none without out_dir).
  std::string export_dir;
  // Only this run (its job's other runs are not computed), exported straight into export_dir (`xdq export`).
  std::string only_run;
  // Scores only (`xdq rank`): no test image is evaluated and no label read; each cell holds its domain and
  // scores (n = 0). Runs are quantized only when a scorer reads the quantized model.
  bool score_only = false;
};

// The job of the plan holding run `run_id`; an Error naming the closest run ids when there is none.
std::size_t job_of_run(const Plan& plan, const std::string& run_id);

// Whose job shards a folder keeps: `xdq run`'s (DIR/jobs) or `xdq analyze`'s (DIR/analysis_jobs).
enum class ShardKind { Run, Analysis };
const char* shard_folder(ShardKind kind);

// An Error when `out_dir` holds job shards of `kind` from another config than the one `resolved_config`
// returns (resolved_config_yaml without provenance; called only when `out_dir` is given). Checked
// before any work.
void check_resumable(const std::function<std::string()>& resolved_config, const std::string& out_dir, ShardKind kind);

ExperimentRun run_experiment(const ExperimentConfig& cfg, PluginRegistry& registry, std::ostream& progress,
                             const RunOptions& options = {});

}  // namespace xdq
