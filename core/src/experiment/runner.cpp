#include "xdq/experiment/runner.h"

#include "pipeline.h"

#include <algorithm>
#include <mutex>
#include <ostream>

#include "xdq/data/sources.h"
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
YAML::Node calibration_set_trace(const ExperimentConfig& cfg, const JobSpec& job, const Dataset& set,
                                 DomainCache& domains, const Pipeline& pipeline) {
  const DomainSpec& domain = *job.domain;
  YAML::Node c;
  c["model"] = cfg.models[job.model].name;
  c["domain"] = domain.name;
  c["source"] = split_name(domain, Split::Train);
  c["count"] = set.size();
  c["seed"] = job.seed;
  c["hash"] = set.content_hash();
  if (!domain.synthesizer.empty())
    c["cache_file"] = domains.cache_file(domain, pipeline.prepared(job.model).shape, job.count, job.seed, &cfg.models[job.model]);
  return c;
}

// Samples for the report: synthesized sets as a grid per model (4 rows of 8), real domains as a strip of
// 10 (the same for every model), test domains at the last model's input shape.
void add_samples(const ExperimentConfig& cfg, const Plan& plan, Pipeline& pipeline, DomainCache& domains,
                 std::vector<SampleImages>& samples) {
  for (const JobSpec& job : plan.jobs) {
    const Dataset& set = pipeline.calibration_set(job);
    if (!job.first_set || set.size() == 0) continue;
    if (job.domain->synthesizer.empty())
      samples.push_back({"domain_" + job.domain->name, set.images.slice(0, 0, 10), 10});
    else
      samples.push_back({"synthesized_" + job.domain->name + "_" + cfg.models[job.model].name, set.images.slice(0, 0, 32), 8});
  }
  if (cfg.models.empty()) return;
  const InputShape& shape = pipeline.prepared(cfg.models.size() - 1).shape;
  for (const DomainSpec& d : cfg.test_domains)
    samples.push_back(
        {"domain_" + d.name, domains.get(d, Split::Test, shape, cfg.test_count, cfg.seed).images.slice(0, 0, 10), 10});
}

}  // namespace

ExperimentRun run_experiment(const ExperimentConfig& cfg, PluginRegistry& registry, std::ostream& progress) {
  const int threads = apply_thread_count(cfg.threads);
  DomainCache domains(cfg, registry, progress);
  Pipeline pipeline(cfg, registry, domains, progress);
  const Plan plan = plan_experiment(cfg);
  for (const JobSpec& job : plan.jobs) pipeline.calibration_set(job);
  pipeline.set_run_counter(plan.run_count());

  // Jobs run `jobs` at a time and their results are gathered in plan order, so the output does not depend
  // on the parallelism.
  const int parallel_jobs =
      parallel_jobs_available() ? std::max(1, std::min({cfg.jobs, threads, static_cast<int>(plan.jobs.size())})) : 1;
  StatisticsCache statistics(cache_directory(cfg.data));
  std::mutex progress_mutex;
  std::vector<JobOutput> outputs(plan.jobs.size());
  run_jobs(plan.jobs.size(), parallel_jobs, threads, [&](std::size_t j) {
    if (parallel_jobs == 1) {
      outputs[j] = pipeline.run(plan.jobs[j], progress, statistics);
      return;
    }
    SharedLineStream log(progress, progress_mutex);
    outputs[j] = pipeline.run(plan.jobs[j], log, statistics);
  });

  ExperimentRun run;
  run.results.experiment = cfg.name;
  YAML::Node provenance;
  provenance["threads"] = threads;
  provenance["jobs"] = parallel_jobs;
  for (std::size_t m = 0; m < cfg.models.size(); ++m) provenance["models"].push_back(model_trace_yaml(cfg.models[m], pipeline.trace(m)));
  for (std::size_t j = 0; j < plan.jobs.size(); ++j) {
    provenance["calibration_sets"].push_back(
        calibration_set_trace(cfg, plan.jobs[j], pipeline.calibration_set(plan.jobs[j]), domains, pipeline));
    for (RunResult& r : outputs[j].runs) run.results.runs.push_back(std::move(r));
    run.results.layer_shift.insert(run.results.layer_shift.end(), outputs[j].layer_shift.begin(), outputs[j].layer_shift.end());
    run.data_files.insert(outputs[j].files.begin(), outputs[j].files.end());
  }
  add_samples(cfg, plan, pipeline, domains, run.samples);
  run.resolved_config = resolved_config_yaml(cfg, provenance);
  return run;
}

}  // namespace xdq
