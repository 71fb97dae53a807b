#include "xdq/experiment/runner.h"

#include "pipeline.h"
#include "scoring.h"
#include "shards.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <set>
#include <ostream>

#include "xdq/data/sources.h"
#include "xdq/error.h"
#include "xdq/files.h"
#include "xdq/parallel.h"
#include "xdq/plugin/registry.h"

namespace xdq {

namespace {

YAML::Node model_trace_yaml(const ModelEntry& entry, const ModelTrace& trace) {
  YAML::Node m;
  m["name"] = entry.name;
  m["hash"] = trace.hash;
  m["mean"] = trace.pre.mean;
  m["std"] = trace.pre.std;
  m["input"] = std::vector<std::int64_t>{trace.shape.channels, trace.shape.height, trace.shape.width};
  m["folded_bn"] = trace.folded_bn;
  return m;
}

// What a job's calibration set was (in the provenance of the resolved config).
YAML::Node calibration_set_trace(const JobSpec& job, const CalibrationSet& set, DomainCache& domains,
                                 const Pipeline& pipeline) {
  const DomainSpec& domain = *job.domain;
  YAML::Node c;
  c["model"] = job.entry->name;
  c["domain"] = domain.name;
  c["source"] = split_name(domain, Split::Train);
  c["count"] = set.images.size();
  c["seed"] = job.seed;
  c["hash"] = set.content_hash();
  if (job.selector) c["selector"] = job.selector->label;
  if (!domain.synthesizer.empty())
    c["cache_file"] = domains.cache_file(domain, pipeline.prepared(job.model).shape, job.count, job.seed, job.entry);
  return c;
}

// The pictures a job contributes: its calibration set (first size and repeat only) as a strip of 10, or a
// synthesized set as a grid per model (4 rows of 8); job 0 also carries the test-domain strips, at its
// model's input shape.
void add_samples(const std::vector<DomainSpec>& test_domains, const JobSpec& job, std::size_t index,
                 const CalibrationSet& set, const Pipeline& pipeline, JobShard& shard) {
  if (job.first_set && set.images.size() > 0) {
    if (job.domain->synthesizer.empty())
      shard.samples.push_back({"domain_" + job.domain->name + (job.selector ? "_" + job.selector->label : ""),
                               set.images.head(10), 10});
    else
      shard.samples.push_back({"synthesized_" + job.domain->name + "_" + job.entry->name,
                               set.images.head(32), 8});
  }
  if (index != 0) return;
  const PreparedModel& prepared = pipeline.prepared(job.model);  // its test sets, at its input shape
  for (std::size_t t = 0; t < test_domains.size(); ++t)
    shard.test_samples.push_back({"domain_" + test_domains[t].name, prepared.tests[t].head(10).images, 10});
}

// Runs the jobs marked in `todo`, `jobs` at a time, each kept as a shard as soon as it finishes.
void run_pending_jobs(const ExperimentConfig& cfg, PluginRegistry& registry, std::ostream& progress, const Plan& plan,
                      const std::vector<bool>& todo, const ShardStore& store, int threads, const RunOptions& options,
                      std::vector<JobShard>& shards, int& parallel_jobs) {
  std::vector<bool> needed(cfg.models.size(), false);
  for (std::size_t j = 0; j < plan.jobs.size(); ++j) needed[plan.jobs[j].model] = needed[plan.jobs[j].model] || todo[j];
  DomainCache domains(cfg.file, cfg.execution, cfg.data, cfg.calibration, cfg.models, registry, progress);
  Pipeline pipeline(cfg, registry, domains, progress, needed, !options.score_only);
  const std::string exports = !options.export_dir.empty() ? options.export_dir
                              : options.out_dir.empty()   ? ""
                                                          : (std::filesystem::path(options.out_dir) / "exports").string();
  pipeline.set_export_root(exports, !options.only_run.empty());
  pipeline.set_only_run(options.only_run);
  std::vector<std::size_t> pending;
  std::size_t runs = 0;
  for (std::size_t j = 0; j < plan.jobs.size(); ++j)
    if (todo[j]) {
      pending.push_back(j);
      pipeline.calibration_set(plan.jobs[j]);
      runs += options.only_run.empty() ? plan.jobs[j].runs.size() : 1;
    }
  pipeline.set_run_counter(runs);
  parallel_jobs =
      parallel_jobs_available() ? std::max(1, std::min({cfg.execution.jobs, threads, static_cast<int>(pending.size())})) : 1;
  StatisticsCache statistics(cache_directory(cfg.data));
  std::mutex progress_mutex;
  run_jobs(pending.size(), parallel_jobs, threads, [&](std::size_t k) {
    const std::size_t j = pending[k];
    const JobSpec& job = plan.jobs[j];
    JobShard& shard = shards[j];
    if (parallel_jobs == 1) {
      shard.output = pipeline.run(job, progress, statistics);
    } else {
      SharedLineStream log(progress, progress_mutex);
      shard.output = pipeline.run(job, log, statistics);
    }
    const CalibrationSet& set = pipeline.calibration_set(job);
    shard.model_trace = model_trace_yaml(*job.entry, pipeline.trace(job.model));
    shard.calibration_trace = calibration_set_trace(job, set, domains, pipeline);
    add_samples(cfg.test.domains, job, j, set, pipeline, shard);
    store.write(job, j, shard);
  });
}

// This process' environment plus `extra` ("NAME=value"), for posix_spawn.
std::vector<std::string> environment_with(const std::string& extra) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) env.emplace_back(*e);
  env.push_back(extra);
  return env;
}

// Runs `argv` with `env` and waits; "" when it exited with status 0 or 3 (a job with failed runs keeps
// them in its shard), else what ended it.
std::string run_child(const std::vector<std::string>& argv, const std::vector<std::string>& env) {
  std::vector<char*> args, vars;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  for (const auto& v : env) vars.push_back(const_cast<char*>(v.c_str()));
  args.push_back(nullptr);
  vars.push_back(nullptr);
  pid_t pid = 0;
  if (const int e = posix_spawn(&pid, argv[0].c_str(), nullptr, nullptr, args.data(), vars.data()); e != 0)
    throw Error(argv[0] + ": cannot start the job's process (" + std::strerror(e) + ")");
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) throw Error("cannot wait for the job's process (" + std::string(std::strerror(errno)) + ")");
  if (WIFSIGNALED(status))
    return "the job's process ended with signal " + std::to_string(WTERMSIG(status)) + " (" + strsignal(WTERMSIG(status)) + ")";
  if (WEXITSTATUS(status) != 0 && WEXITSTATUS(status) != 3)
    return "the job's process exited with status " + std::to_string(WEXITSTATUS(status)) + " (its error is printed above)";
  return "";
}

// isolation: process. Each pending job runs as `xdq run <DIR/jobs/config.yaml> --out DIR --job K` in a
// child process, which keeps its shard; a child that crashes (a plugin's segfault) or fails fails its
// job's runs alone and the sweep goes on. The parent holds the folder's lock for its children.
// `file` names the experiment in errors; `on_error` and `passes` are the experiment's.
void run_jobs_in_processes(const std::string& file, const std::string& on_error, const std::vector<PluginChoice>& passes,
                           const Plan& plan, const std::vector<bool>& todo, const ShardStore& store,
                           const std::string& out_dir, std::ostream& progress, std::vector<JobShard>& shards) {
  if (!store.enabled()) throw Error(file + ": isolation: process keeps each job as a shard; it needs an output folder (--out)");
  const std::string xdq = (std::filesystem::path(core_library_dir()).parent_path() / "bin" / "xdq").string();
  if (!std::filesystem::is_regular_file(xdq))
    throw Error(file + ": isolation: process starts the xdq program, which is not at " + xdq);
  const std::string out = std::filesystem::absolute(out_dir).lexically_normal().string();
  const std::string config = store.record_config();
  const auto env = environment_with(std::string(PathLock::kLockHeldByParent) + "=" + PathLock::lock_file(out));
  for (std::size_t j = 0; j < plan.jobs.size(); ++j) {
    if (!todo[j]) continue;
    const JobSpec& job = plan.jobs[j];
    progress << "xdq: job " << store.id(job, j) << " in a process of its own" << std::endl;
    const std::string ended = run_child({xdq, "run", config, "--out", out, "--job", std::to_string(j)}, env);
    if (ended.empty() && store.done(job, j)) {
      shards[j] = store.read(job, j);
      continue;
    }
    const std::string error = ended.empty() ? "the job's process ended without its shard" : ended;
    if (on_error == "stop") throw Error("job " + store.id(job, j) + ": " + error);
    progress << "xdq: job " << store.id(job, j) << " FAILED: " << error << std::endl;
    for (const RunSpec& spec : job.runs) {
      RunResult run = run_header(job.entry->name, passes, job, spec, job.count, SelectionRecord());
      run.error = error;
      shards[j].output.runs.push_back(std::move(run));
    }
  }
}

}  // namespace

const char* shard_folder(ShardKind kind) { return kind == ShardKind::Run ? "jobs" : "analysis_jobs"; }

void check_resumable(const std::function<std::string()>& resolved_config, const std::string& out_dir, ShardKind kind) {
  ShardFolder(resolved_config, out_dir, shard_folder(kind));
}

std::size_t job_of_run(const Plan& plan, const std::string& run_id) {
  std::vector<std::string> ids;
  for (std::size_t j = 0; j < plan.jobs.size(); ++j)
    for (const RunSpec& r : plan.jobs[j].runs) {
      if (r.id == run_id) return j;
      ids.push_back(r.id);
    }
  throw Error("no run '" + run_id + "' in this experiment (xdq run --dry-run lists them); closest: " +
              closest_names(run_id, ids));
}

ExperimentRun run_experiment(const ExperimentConfig& cfg, PluginRegistry& registry, std::ostream& progress,
                             const RunOptions& requested) {
  RunOptions options = requested;
  const int threads = apply_thread_count(cfg.execution.threads);
  warn_if_convolutions_stay_direct(cfg.execution, progress);
  const ShardStore store([&cfg] { return resolved_config_yaml(cfg); }, options.out_dir, shard_folder(ShardKind::Run));
  const Plan plan = plan_experiment(cfg);
  if (!options.only_run.empty()) options.only_job = job_of_run(plan, options.only_run);
  if (options.only_job && *options.only_job >= plan.jobs.size())
    throw ConfigError("--job " + std::to_string(*options.only_job) + ": the plan has " + std::to_string(plan.jobs.size()) +
                " jobs (0 to " + std::to_string(plan.jobs.size() - 1) + "; see --dry-run)");
  std::unique_ptr<PathLock> job_lock;
  if (options.only_job && !options.merge_only) job_lock = store.lock(plan.jobs[*options.only_job], *options.only_job);
  // Finished jobs are read back, the others run; results are gathered in plan order, so the output does
  // not depend on the parallelism, the resumptions or the processes that ran the jobs.
  ExperimentRun run;
  std::vector<bool> todo(plan.jobs.size());
  std::vector<bool> present(plan.jobs.size(), true);
  std::vector<JobShard> shards(plan.jobs.size());
  for (std::size_t j = 0; j < plan.jobs.size(); ++j) {
    const bool wanted = !options.only_job || *options.only_job == j;
    todo[j] = wanted && !store.done(plan.jobs[j], j) && !options.merge_only;
    if (options.merge_only && !store.done(plan.jobs[j], j)) {
      run.missing_jobs.push_back(store.id(plan.jobs[j], j));
      present[j] = false;
      continue;
    }
    if (wanted && !todo[j]) {
      progress << "xdq: job " << store.id(plan.jobs[j], j) << " finished before; read from its shard\n";
      shards[j] = store.read(plan.jobs[j], j);
    }
  }
  int parallel_jobs = 1;
  const bool pending = std::any_of(todo.begin(), todo.end(), [](bool t) { return t; });
  if (pending && cfg.execution.isolation == "process" && !options.only_job)
    run_jobs_in_processes(cfg.file, cfg.execution.on_error, cfg.quantization.passes, plan, todo, store, options.out_dir,
                          progress, shards);
  else if (pending)
    run_pending_jobs(cfg, registry, progress, plan, todo, store, threads, options, shards, parallel_jobs);

  run.source = results_source(cfg);
  run.results.experiment = cfg.name;
  run.results.scores = declared_scores(registry, cfg.test.scorers);
  YAML::Node provenance;
  provenance["threads"] = threads;
  provenance["jobs"] = parallel_jobs;
  std::set<std::size_t> traced_models;
  std::vector<SampleImages> test_samples;
  for (std::size_t j = 0; j < plan.jobs.size(); ++j) {
    if ((options.only_job && *options.only_job != j) || !present[j]) continue;
    JobShard& shard = shards[j];
    // (A job whose process failed has no trace of its model or set.)
    if (shard.model_trace && traced_models.insert(plan.jobs[j].model).second) provenance["models"].push_back(shard.model_trace);
    if (shard.calibration_trace) provenance["calibration_sets"].push_back(shard.calibration_trace);
    if (const YAML::Node& c = shard.calibration_trace; c["cache_file"])
      run.synthesized_sets.emplace_back(
          file_name_safe(c["domain"].as<std::string>() + "_" + c["model"].as<std::string>() + "_n" +
                         c["count"].as<std::string>() + "_s" + c["seed"].as<std::string>() + "_" + c["hash"].as<std::string>()) +
              ".pt",
          c["cache_file"].as<std::string>());
    for (RunResult& r : shard.output.runs) run.results.runs.push_back(std::move(r));
    run.results.layer_shift.insert(run.results.layer_shift.end(), shard.output.layer_shift.begin(),
                                   shard.output.layer_shift.end());
    run.data_files.insert(shard.output.files.begin(), shard.output.files.end());
    run.samples.insert(run.samples.end(), shard.samples.begin(), shard.samples.end());
    test_samples.insert(test_samples.end(), shard.test_samples.begin(), shard.test_samples.end());
  }
  run.samples.insert(run.samples.end(), test_samples.begin(), test_samples.end());
  run.resolved_config = resolved_config_yaml(cfg, provenance);
  return run;
}

}  // namespace xdq
