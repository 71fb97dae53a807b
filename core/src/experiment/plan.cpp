#include "xdq/experiment/plan.h"

#include <algorithm>
#include <sstream>

namespace xdq {

namespace {

// A run's id names what varies in the experiment: model, bits, calibrator and rounding always; the
// calibration domain, size and seed only when the experiment sweeps them.
std::string run_id(const CalibrationSettings& calibration, const JobSpec& job, const BitSetting& bits,
                   const PluginChoice& cal, const PluginChoice& rnd) {
  std::string id = job.entry->name + "/" + bits.label() + "/" + cal.label + "/" + rnd.label;
  if (calibration.selectors.size() > 1) id += "/" + job.selector->label;
  if (calibration.domains.size() > 1) id += "/" + job.domain->name;
  if (calibration.counts.size() > 1) id += "/n" + std::to_string(job.count);
  if (calibration.repeats > 1) id += "/s" + std::to_string(job.seed);
  return id;
}

}  // namespace

std::size_t Plan::run_count() const {
  std::size_t n = 0;
  for (const JobSpec& j : jobs) n += j.runs.size();
  return n;
}

Plan plan_experiment(const ExperimentConfig& cfg) {
  Plan plan;
  for (std::size_t mi = 0; mi < cfg.models.size(); ++mi)
    for (const DomainSpec& domain : cfg.calibration.domains)
      for (std::int64_t count : cfg.calibration.counts)
        for (int repeat = 0; repeat < cfg.calibration.repeats; ++repeat)
          for (std::size_t si = 0; si < std::max<std::size_t>(1, cfg.calibration.selectors.size()); ++si) {
            JobSpec job;
            job.model = mi;
            job.entry = &cfg.models[mi];
            job.domain = &domain;
            job.count = count;
            job.seed = cfg.execution.seed + static_cast<std::uint64_t>(repeat);
            job.selector = cfg.calibration.selectors.empty() ? nullptr : &cfg.calibration.selectors[si];
            job.first_set = repeat == 0 && count == cfg.calibration.counts.front();
            for (const BitSetting& bits : cfg.quantization.bits)
              for (const PluginChoice& cal : cfg.quantization.calibrators)
                for (const PluginChoice& rnd : cfg.quantization.rounding)
                  job.runs.push_back({run_id(cfg.calibration, job, bits, cal, rnd), &bits, &cal, &rnd});
            plan.jobs.push_back(std::move(job));
          }
  return plan;
}

ResultsSource results_source(const ExperimentConfig& cfg) {
  const CalibrationSettings& calibration = cfg.calibration;
  ResultsSource source{cfg.name, cfg.file, cfg.quantization.preset, cfg.quantization.weight_range,
                       cfg.quantization.calibrators.front().label, calibration.domains.front().name,
                       cfg.test.domains.front().name, cfg.execution.seed};
  source.sweeps_domains = calibration.domains.size() > 1 || cfg.test.domains.size() > 1 || calibration.counts.size() > 1 ||
                          calibration.repeats > 1 || calibration.selectors.size() > 1;
  return source;
}

std::string describe_plan(const ExperimentConfig& cfg, const Plan& plan) {
  std::ostringstream out;
  const std::size_t runs = plan.run_count(), cells = runs * cfg.test.domains.size();
  std::int64_t calibration_images = 0;
  for (const JobSpec& j : plan.jobs) calibration_images += j.domain->dataset == "none" ? 0 : j.count;
  out << "experiment " << cfg.name << " (" << cfg.file << ")\n";
  out << plan.jobs.size() << " jobs (model x calibration set), " << runs << " runs, " << cells
      << " cells (run x test domain); up to " << cfg.execution.jobs << " jobs at a time\n";
  for (std::size_t j = 0; j < plan.jobs.size(); ++j) {
    const JobSpec& job = plan.jobs[j];
    out << "job " << j << ": " << cfg.models[job.model].name << " calibrated on " << job.domain->name << " ("
        << job.count << " images, seed " << job.seed
        << (job.selector ? ", chosen by " + job.selector->label + " from a pool of " +
                               (cfg.calibration.pool_size > 0 ? std::to_string(cfg.calibration.pool_size) : std::string("the whole split"))
                         : std::string())
        << "), " << job.runs.size() << " runs\n";
    for (const RunSpec& r : job.runs) out << "  " << r.id << "\n";
  }
  out << "test domains:";
  for (const DomainSpec& d : cfg.test.domains) out << " " << d.name;
  out << " (" << (cfg.test.count > 0 ? std::to_string(cfg.test.count) : std::string("all")) << " images each)\n";
  out << "work: " << calibration_images << " calibration images prepared (one statistics pass each, shared by"
      << " every calibrator and bit setting of a job); " << cells << " evaluations of "
      << (cfg.test.count > 0 ? std::to_string(cfg.test.count) + " images" : std::string("a whole test split"))
      << " plus FP32 once per model and test domain";
  std::int64_t learned = 0;
  for (const PluginChoice& r : cfg.quantization.rounding)
    if (r.options.values().count("iters")) learned += r.options.integer("iters");
  if (learned > 0)
    out << "; learned rounding: " << learned << " iterations per reconstruction unit summed over rounding methods, for "
        << runs / cfg.quantization.rounding.size() << " calibrated models";
  out << "\n";
  return out.str();
}

}  // namespace xdq
