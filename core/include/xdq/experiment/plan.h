#pragma once
// The plan of an experiment: what `xdq run` will execute, computed from the validated config alone (no
// model or data is read), so it can be printed (`--dry-run`) and checked before any work.
//   job = one model x one calibration set (domain, count, seed, selector): data prepared and passes run once;
//   run = one bit setting x calibrator x rounding of a job, tested on every test domain (its cells).
#include <cstdint>
#include <string>
#include <vector>

#include "xdq/experiment/config.h"
#include "xdq/experiment/results.h"

namespace xdq {

struct RunSpec {
  std::string id;  // model/bits/calibrator/rounding[/selector][/domain][/nCOUNT][/sSEED], unique in the plan
  const BitSetting* bits = nullptr;
  const PluginChoice* calibrator = nullptr;
  const PluginChoice* rounding = nullptr;
};

struct JobSpec {
  std::size_t model = 0;  // index into the experiment's models
  const ModelEntry* entry = nullptr;  // that model
  const DomainSpec* domain = nullptr;
  std::int64_t count = 0;
  std::uint64_t seed = 0;
  const PluginChoice* selector = nullptr;  // chooses the set from a pool (calibration.selector), or null
  bool first_set = false;  // first size, first repeat (of each selector): the set diagnostics and sample pictures use
  // The calibration set's name in tables: the domain, and the selector that chose it from the domain.
  std::string set_name() const { return domain->name + (selector ? " (" + selector->label + ")" : ""); }
  std::vector<RunSpec> runs;  // bits x calibrators x rounding, in that nesting order
};

struct Plan {
  std::vector<JobSpec> jobs;
  std::size_t run_count() const;
};

Plan plan_experiment(const ExperimentConfig& cfg);

ResultsSource results_source(const ExperimentConfig& cfg);

// Human-readable plan: every job with its runs, totals of runs and (run, test domain) cells, and an
// estimate of the work in images passed through a model.
std::string describe_plan(const ExperimentConfig& cfg, const Plan& plan);

}  // namespace xdq
