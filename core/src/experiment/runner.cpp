#include "xdq/experiment/runner.h"

#include "pipeline.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cctype>
#include <cmath>
#include <iomanip>
#include <map>
#include <mutex>
#include <ostream>
#include <sstream>

#include "xdq/data/image_files.h"
#include "xdq/data/sources.h"
#include "xdq/error.h"
#include "xdq/exec/executor.h"
#include "xdq/ir/import.h"
#include "xdq/ir/passes.h"
#include "xdq/parallel.h"
#include "xdq/plugin/registry.h"
#include "xdq/quant/ptq.h"

namespace xdq {

namespace {

// A reconstruction run's loss curves (unit,iteration,reconstruction_loss,...) as a log-scale chart.
std::string curves_png(const std::string& run, const std::string& csv) {
  std::vector<std::string> units;
  std::vector<std::vector<std::pair<double, double>>> series;
  std::istringstream lines(csv);
  std::string line;
  std::getline(lines, line);  // header
  while (std::getline(lines, line)) {
    std::istringstream fields(line);
    std::string unit, iteration, loss;
    std::getline(fields, unit, ',');
    std::getline(fields, iteration, ',');
    std::getline(fields, loss, ',');
    if (units.empty() || units.back() != unit) {
      units.push_back(unit);
      series.emplace_back();
    }
    series.back().emplace_back(std::stod(iteration), std::stod(loss));
  }
  return render_curves_png(run + ": reconstruction loss per unit (log scale)", units, series, true);
}

// One table (and heatmap of clipped %) per calibration domain: layers x test domains.
std::string layer_shift_markdown(const ExperimentResults& results, std::map<std::string, std::string>& files) {
  if (results.layer_shift.empty()) return "";
  std::ostringstream out;
  out << std::fixed << std::setprecision(2) << "## Per-layer shift\n\nFor ranges calibrated on A: the share of each quantized "
      << "activation's values that fall outside its range on B (clipped %), and the total-variation distance between "
      << "the activation histograms on A and on B (TV, 0 = same, 1 = disjoint).\n\n";
  std::vector<std::string> groups;
  for (const auto& l : results.layer_shift) {
    const std::string g = l.model + " " + l.setting + ", ranges from " + l.calibration_domain;
    if (std::find(groups.begin(), groups.end(), g) == groups.end()) groups.push_back(g);
  }
  for (const auto& g : groups) {
    std::vector<std::string> layers, domains;
    std::map<std::pair<std::string, std::string>, const LayerShiftRow*> cell;
    for (const auto& l : results.layer_shift) {
      if (l.model + " " + l.setting + ", ranges from " + l.calibration_domain != g) continue;
      if (std::find(layers.begin(), layers.end(), l.layer) == layers.end()) layers.push_back(l.layer);
      if (std::find(domains.begin(), domains.end(), l.domain) == domains.end()) domains.push_back(l.domain);
      cell[{l.layer, l.domain}] = &l;
    }
    out << "#### " << g << ": clipped % / TV\n\n| layer |";
    for (const auto& d : domains) out << " " << d << " |";
    out << "\n|---|";
    for (std::size_t j = 0; j < domains.size(); ++j) out << "---:|";
    out << "\n";
    std::vector<std::vector<double>> clipped;
    for (const auto& layer : layers) {
      out << "| " << layer << " |";
      clipped.emplace_back();
      for (const auto& d : domains) {
        const LayerShiftRow* r = cell[{layer, d}];
        out << " " << 100 * r->clipped_fraction << " / " << r->tv_distance << " |";
        clipped.back().push_back(100 * r->clipped_fraction);
      }
      out << "\n";
    }
    out << "\n";
    if (image_output_available()) {
      std::string file = "layer_shift_" + g + ".png";
      for (char& c : file)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_') c = '_';
      files[file] = render_heatmap_png(g + ": clipped %", layers, domains, clipped);
      out << "![" << g << "](" << file << ")\n\n";
    }
  }
  return out.str();
}

}  // namespace

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

// Calibration sets, then the report's sample pictures: synthesized sets as a grid per model (4 rows of 8),
// real domains as a strip of 10 (the same for every model), test domains at the last model's input shape.
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

void add_sample_pictures(const ExperimentConfig& cfg, const Plan& plan, Pipeline& pipeline, DomainCache& domains,
                         std::map<std::string, std::string>& pictures) {
  if (!image_output_available()) return;
  for (const JobSpec& job : plan.jobs) {
    const Dataset& set = pipeline.calibration_set(job);
    if (!job.first_set || set.size() == 0) continue;
    if (job.domain->synthesizer.empty())
      pictures["domain_" + job.domain->name + ".png"] = render_grid_png(set.images.slice(0, 0, 10), 10, 3);
    else
      pictures["synthesized_" + job.domain->name + "_" + cfg.models[job.model].name + ".png"] =
          render_grid_png(set.images.slice(0, 0, 32), 8, 3);
  }
  if (cfg.models.empty()) return;
  const InputShape& shape = pipeline.prepared(cfg.models.size() - 1).shape;
  for (const DomainSpec& d : cfg.test_domains)
    pictures["domain_" + d.name + ".png"] =
        render_grid_png(domains.get(d, Split::Test, shape, cfg.test_count, cfg.seed).images.slice(0, 0, 10), 10, 3);
}

}  // namespace

ExperimentResults run_experiment(const ExperimentConfig& cfg, PluginRegistry& registry, std::ostream& progress,
                                 std::string* resolved_yaml, std::map<std::string, std::string>* pictures) {
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

  ExperimentResults results;
  results.experiment = cfg.name;
  YAML::Node provenance;
  provenance["threads"] = threads;
  provenance["jobs"] = parallel_jobs;
  for (std::size_t m = 0; m < cfg.models.size(); ++m) provenance["models"].push_back(model_trace_yaml(cfg.models[m], pipeline.trace(m)));
  for (std::size_t j = 0; j < plan.jobs.size(); ++j) {
    provenance["calibration_sets"].push_back(
        calibration_set_trace(cfg, plan.jobs[j], pipeline.calibration_set(plan.jobs[j]), domains, pipeline));
    for (RunResult& r : outputs[j].runs) results.runs.push_back(std::move(r));
    results.layer_shift.insert(results.layer_shift.end(), outputs[j].layer_shift.begin(), outputs[j].layer_shift.end());
    if (pictures) pictures->insert(outputs[j].files.begin(), outputs[j].files.end());
  }
  if (pictures) add_sample_pictures(cfg, plan, pipeline, domains, *pictures);
  if (resolved_yaml) *resolved_yaml = resolved_config_yaml(cfg, provenance);
  return results;
}

ExperimentResults run_experiment_to(const ExperimentConfig& cfg, PluginRegistry& registry, const std::string& out_dir,
                                    std::ostream& progress) {
  std::string resolved;
  std::map<std::string, std::string> files;
  ExperimentResults results = run_experiment(cfg, registry, progress, &resolved, &files);
  std::ostringstream report;
  report << "Source: `" << cfg.file << "`; preset `" << cfg.preset << "`, weight ranges `" << cfg.weight_range
         << "`, seed " << cfg.seed << ". Drop = quantized minus FP32 top-1, in points.\n";
  std::string body = results_markdown(results, report.str());
  if (cfg.calibration_domains.size() > 1 || cfg.test_domains.size() > 1 || cfg.calibration_counts.size() > 1 ||
      cfg.repeats > 1) {
    body += "\n## Cross-domain gap matrices\n\n";
    for (const GapMatrix& m : gap_matrices(results)) {
      std::string file = "gap_" + m.model + "_" + m.setting + ".png";
      std::replace(file.begin(), file.end(), '/', '_');
      if (image_output_available()) {
        // First row: FP32 on each test domain, the reference every cell is read against.
        std::vector<std::vector<double>> percent{m.fp32_top1};
        percent.insert(percent.end(), m.quant_top1.begin(), m.quant_top1.end());
        for (auto& row : percent)
          for (auto& v : row) v *= 100;
        std::vector<std::string> rows{"FP32"};
        rows.insert(rows.end(), m.calibration_domains.begin(), m.calibration_domains.end());
        files[file] = render_heatmap_png(m.model + " " + m.setting + ": quantized top-1 (%)", rows, m.test_domains, percent);
        body += "![" + m.setting + "](" + file + ")\n\n";
      }
      body += gap_matrix_markdown(m);
    }
    body += layer_shift_markdown(results, files);
  }
  std::string curves;
  if (image_output_available()) {
    std::map<std::string, std::string> charts;
    for (const auto& [name, csv] : files)
      if (name.size() > 11 && name.compare(name.size() - 11, 11, "_curves.csv") == 0) {
        const std::string png = name.substr(0, name.size() - 4) + ".png";
        charts[png] = curves_png(name.substr(0, name.size() - 11), csv);
        curves += "![" + png + "](" + png + ")\n\n";
      }
    files.insert(charts.begin(), charts.end());
  }
  if (!curves.empty())
    body += "\n## Reconstruction loss per unit\n\nEach run's `*_curves.csv` holds the sampled losses.\n\n" + curves;
  if (cfg.calibration_domains.size() > 1 || cfg.test_domains.size() > 1 || cfg.calibration_counts.size() > 1 ||
      cfg.repeats > 1) {
    if (image_output_available()) {
      body += "## Domains (samples)\n\n";
      for (const auto& [name, bytes] : files)
        if (name.rfind("domain_", 0) == 0) body += "`" + name.substr(7, name.size() - 11) + "` ![](" + name + ")\n\n";
    }
  }
  if (image_output_available()) {
    std::string grids;
    for (const auto& [name, bytes] : files)
      if (name.rfind("synthesized_", 0) == 0) grids += "`" + name.substr(12, name.size() - 16) + "`\n\n![](" + name + ")\n\n";
    if (!grids.empty()) body += "## Synthesized calibration images\n\nThe first 32 of each set (pixels clipped to [0, 1]).\n\n" + grids;
  }
  files["config.resolved.yaml"] = resolved;
  files["results.json"] = results_json(results);
  files["results.csv"] = results_csv(results);
  files["report.md"] = body;
  write_files_atomically(out_dir, files);
  return results;
}

}  // namespace xdq
