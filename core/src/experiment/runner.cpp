#include "xdq/experiment/runner.h"

#include "xdq/experiment/diagnostics.h"
#include "prepare.h"

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

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

YAML::Node plugin_list_yaml(const std::vector<PluginChoice>& choices) {
  YAML::Node list(YAML::NodeType::Sequence);
  for (const auto& c : choices) {
    YAML::Node item;
    item["name"] = c.name;
    if (c.label != c.name) item["label"] = c.label;
    for (const auto& [key, value] : c.options.values()) {
      if (auto b = std::get_if<bool>(&value)) item[key] = *b;
      else if (auto i = std::get_if<std::int64_t>(&value)) item[key] = *i;
      else if (auto d = std::get_if<double>(&value)) item[key] = *d;
      else item[key] = std::get<std::string>(value);
    }
    list.push_back(item);
  }
  return list;
}

YAML::Node spec_yaml(const QuantSpec& spec) {
  YAML::Node n;
  n["symmetric"] = spec.symmetric;
  n["per_channel"] = spec.per_channel;
  n["narrow_range"] = spec.narrow_range;
  n["pow2_scale"] = spec.pow2_scale;
  return n;
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

ExperimentResults run_experiment(const ExperimentConfig& cfg, PluginRegistry& registry, std::ostream& progress,
                                 std::string* resolved_yaml, std::map<std::string, std::string>* pictures) {
  const int threads = apply_thread_count(cfg.threads);
  ExperimentResults results;
  results.experiment = cfg.name;
  DomainCache domains(cfg, registry, progress);

  YAML::Node resolved;
  resolved["experiment"] = cfg.name;
  resolved["seed"] = cfg.seed;
  resolved["threads"] = threads;
  resolved["source_file"] = cfg.file;

  // Everything that can be refused is checked before any calibration or evaluation starts.
  std::vector<PreparedModel> prepared;
  for (const ModelEntry& entry : cfg.models) prepared.push_back(prepare_model(cfg, entry, domains, progress));

  // Graph passes run before quantization (FP graph) or after rounding (quantized model), as each declares.
  struct Pass {
    const PluginRecord* plugin;
    std::shared_ptr<GraphPass> object;
    bool after_rounding;
  };
  std::vector<Pass> passes;
  for (const PluginChoice& choice : cfg.passes) {
    Pass pass{&registry.get(PluginKind::GraphPass, choice.name), registry.create<GraphPass>(choice.name, choice.options), false};
    pass.after_rounding = plugin_call(*pass.plugin, "stage", [&] { return pass.object->stage(); }) == PassStage::AfterRounding;
    passes.push_back(std::move(pass));
  }

  // Per model, before any run: FP32 accuracy on every test domain and the BN-folded graph.
  struct ModelState {
    std::vector<double> fp32_top1;
    Graph folded;
  };
  std::vector<ModelState> states;
  for (std::size_t mi = 0; mi < cfg.models.size(); ++mi) {
    const PreparedModel& p = prepared[mi];
    ModelState state;
    const Executor fp32(p.model.graph);
    for (const Dataset* t : p.tests)
      state.fp32_top1.push_back(top1_accuracy([&](const at::Tensor& x) { return fp32.forward(x); }, *t, p.pre, cfg.batch_size));
    state.folded = p.model.graph;
    const int folded_pairs = cfg.fold_bn ? fold_batch_norm(state.folded) : 0;
    states.push_back(std::move(state));
    YAML::Node m;
    m["name"] = cfg.models[mi].name;
    m["path"] = cfg.models[mi].path;
    m["hash"] = file_hash(cfg.models[mi].path);
    m["mean"] = p.pre.mean;
    m["std"] = p.pre.std;
    m["input"] = std::vector<std::int64_t>{p.shape.channels, p.shape.height, p.shape.width};
    m["folded_bn"] = folded_pairs;
    resolved["models"].push_back(m);
  }

  // Independent runs: one job per (model, calibration set); each runs every bit setting, calibrator and
  // rounding on its calibration set and tests on every test domain. Jobs run `jobs` at a time and their
  // results are gathered in job order, so the output does not depend on the parallelism.
  struct Job {
    std::size_t model;
    const DomainSpec* domain;
    std::int64_t count;
    std::uint64_t seed;
    bool first_set;  // first size, first repeat: the one diagnostics and sample pictures use
    const Dataset* calibration;
  };
  struct JobOutput {
    std::vector<RunResult> runs;
    std::vector<LayerShiftRow> layer_shift;
    std::map<std::string, std::string> files;
  };
  std::vector<Job> jobs;
  for (std::size_t mi = 0; mi < cfg.models.size(); ++mi)
    for (const DomainSpec& domain : cfg.calibration_domains)
      for (std::int64_t count : cfg.calibration_counts)
        for (int repeat = 0; repeat < cfg.repeats; ++repeat) {
          const std::uint64_t seed = cfg.seed + static_cast<std::uint64_t>(repeat);
          const Dataset& calibration = domains.get(domain, Split::Train, prepared[mi].shape, count, seed, &cfg.models[mi]);
          jobs.push_back({mi, &domain, count, seed, repeat == 0 && count == cfg.calibration_counts.front(), &calibration});
        }
  const int parallel_jobs =
      parallel_jobs_available() ? std::max(1, std::min({cfg.jobs, threads, static_cast<int>(jobs.size())})) : 1;
  resolved["jobs"] = parallel_jobs;
  const std::size_t total = jobs.size() * cfg.bits.size() * cfg.calibrators.size() * cfg.rounding.size();
  std::atomic<std::size_t> index{0};
  StatisticsCache statistics(cache_directory(cfg.data));
  std::mutex progress_mutex;
  std::vector<JobOutput> outputs(jobs.size());

  auto run_job = [&](const Job& job, std::ostream& log, JobOutput& out) {
    const ModelEntry& entry = cfg.models[job.model];
    const PreparedModel& p = prepared[job.model];
    const ModelState& state = states[job.model];
    const DomainSpec& domain = *job.domain;
    const std::uint64_t seed = job.seed;
    const Dataset& calibration = *job.calibration;
    const at::Tensor calib_images = p.pre.apply(calibration.images);
    PassContext pass_context;
    pass_context.calibration = calib_images;
    pass_context.seed = seed;
    pass_context.log = &log;
    // Graph passes (e.g. AdaBN) adapt the FP graph to this calibration set before folding.
    Graph folded = state.folded;
    if (std::any_of(passes.begin(), passes.end(), [](const auto& pass) { return !pass.after_rounding; })) {
      folded = p.model.graph;
      for (const auto& pass : passes)
        if (!pass.after_rounding) plugin_call(*pass.plugin, "run", [&] { pass.object->run(folded, pass_context); });
      if (cfg.fold_bn) fold_batch_norm(folded);
    }
    for (const BitSetting& bits : cfg.bits) {
      const PtqSettings settings = ptq_settings(cfg, bits);
      for (const PluginChoice& cal : cfg.calibrators) {
        const auto calibration_start = std::chrono::steady_clock::now();
        const QuantizedModel calibrated =
            calibrated_model(cfg, folded, settings, cal, registry, calib_images, p.pre, statistics, log);
        const double calibration_seconds = seconds_since(calibration_start);
        if (cfg.layer_shift_images > 0 && &bits == &cfg.bits.front() && &cal == &cfg.calibrators.front() && job.first_set) {
          std::vector<std::pair<std::string, at::Tensor>> tests;
          for (std::size_t t = 0; t < p.tests.size(); ++t)
            tests.emplace_back(cfg.test_domains[t].name, p.pre.apply(p.tests[t]->images.slice(0, 0, cfg.layer_shift_images)));
          const std::string setting = bits.label() + "/" + cal.label;
          for (const LayerShift& l :
               measure_layer_shift(calibrated, calib_images.slice(0, 0, cfg.layer_shift_images), tests, cfg.batch_size))
            out.layer_shift.push_back({entry.name, setting, domain.name, l.layer, l.domain, l.clipped_fraction, l.tv_distance});
        }
        for (const PluginChoice& rnd : cfg.rounding) {
          const auto start = std::chrono::steady_clock::now();
          const PluginRecord& rnd_plugin = registry.get(PluginKind::WeightOptimizer, rnd.name);
          auto optimizer = registry.create<WeightOptimizer>(rnd.name, rnd.options);
          QuantizedModel quantized = calibrated;
          RunResult run;
          run.id = entry.name + "/" + bits.label() + "/" + cal.label + "/" + rnd.label;
          if (cfg.calibration_domains.size() > 1) run.id += "/" + domain.name;
          if (cfg.calibration_counts.size() > 1) run.id += "/n" + std::to_string(job.count);
          if (cfg.repeats > 1) run.id += "/s" + std::to_string(seed);
          RoundingContext rounding;
          rounding.calibration = calib_images;
          rounding.seed = seed;
          rounding.progress = &log;
          rounding.files = &out.files;
          rounding.run_name = run.id;
          quantized.round_weights(*optimizer, rnd_plugin, rounding);
          for (const auto& pass : passes)
            if (pass.after_rounding) quantized.apply_pass(*pass.object, *pass.plugin, pass_context);
          const Executor exec = quantized.executor();
          run.model = entry.name;
          run.w_bits = bits.w_bits;
          run.a_bits = bits.a_bits;
          run.calibrator = cal.label;
          run.rounding = rnd.label;
          run.calibration_domain = domain.name;
          run.calibration_seed = seed;
          for (const PluginChoice& pass : cfg.passes) run.passes.push_back(pass.label);
          run.calibration_source = split_name(domain, Split::Train);
          run.calibration_count = calibration.size();
          std::ostringstream line;
          line << std::fixed << std::setprecision(4);
          for (std::size_t t = 0; t < p.tests.size(); ++t) {
            DomainResult d;
            d.domain = cfg.test_domains[t].name;
            d.n = p.tests[t]->size();
            d.fp32_top1 = state.fp32_top1[t];
            d.quant_top1 = top1_accuracy([&](const at::Tensor& x) { return exec.forward(x); }, *p.tests[t], p.pre, cfg.batch_size);
            line << "  " << d.domain << " " << d.quant_top1;
            run.results.push_back(d);
          }
          run.seconds = calibration_seconds + seconds_since(start);
          line << "  (" << std::setprecision(1) << run.seconds << " s)";
          log << "[" << ++index << "/" << total << "] " << run.id << line.str() << std::endl;
          out.runs.push_back(std::move(run));
        }
      }
    }
  };
  run_jobs(jobs.size(), parallel_jobs, threads, [&](std::size_t j) {
    if (parallel_jobs == 1) return run_job(jobs[j], progress, outputs[j]);
    SharedLineStream log(progress, progress_mutex);
    run_job(jobs[j], log, outputs[j]);
  });

  for (std::size_t j = 0; j < jobs.size(); ++j) {
    const Job& job = jobs[j];
    const ModelEntry& entry = cfg.models[job.model];
    const PreparedModel& p = prepared[job.model];
    const DomainSpec& domain = *job.domain;
    const Dataset& calibration = *job.calibration;
    YAML::Node c;
    c["model"] = entry.name;
    c["domain"] = domain.name;
    c["source"] = split_name(domain, Split::Train);
    c["count"] = calibration.size();
    c["seed"] = job.seed;
    c["hash"] = calibration.content_hash();
    if (!domain.synthesizer.empty()) c["cache_file"] = domains.cache_file(domain, p.shape, job.count, job.seed, &entry);
    resolved["calibration_sets"].push_back(c);
    // Synthesized sets: a grid per model (4 rows of 8); real domains: a strip of 10 (the same for every model).
    if (pictures && image_output_available() && job.first_set && calibration.size() > 0) {
      if (domain.synthesizer.empty())
        (*pictures)["domain_" + domain.name + ".png"] = render_grid_png(calibration.images.slice(0, 0, 10), 10, 3);
      else
        (*pictures)["synthesized_" + domain.name + "_" + entry.name + ".png"] =
            render_grid_png(calibration.images.slice(0, 0, 32), 8, 3);
    }
    JobOutput& out = outputs[j];
    for (RunResult& r : out.runs) results.runs.push_back(std::move(r));
    results.layer_shift.insert(results.layer_shift.end(), out.layer_shift.begin(), out.layer_shift.end());
    if (pictures) pictures->insert(out.files.begin(), out.files.end());
  }
  // Test domains: a strip of 10, at the last model's input shape.
  if (pictures && image_output_available() && !prepared.empty())
    for (const DomainSpec& d : cfg.test_domains)
      (*pictures)["domain_" + d.name + ".png"] = render_grid_png(
          domains.get(d, Split::Test, prepared.back().shape, cfg.test_count, cfg.seed).images.slice(0, 0, 10), 10, 3);

  if (resolved_yaml) {
    YAML::Node q;
    q["preset"] = cfg.preset;
    q["weights"] = spec_yaml(cfg.scheme.weights);
    q["activations"] = spec_yaml(cfg.scheme.activations);
    q["activations"]["unsigned_after_relu"] = cfg.scheme.unsigned_after_relu;
    for (const auto& b : cfg.bits) q["bits"].push_back(b.label());
    q["weight_range"] = cfg.weight_range;
    q["fold_bn"] = cfg.fold_bn;
    for (const auto& o : cfg.overrides) {
      YAML::Node on;
      on["layers"] = o.layers;
      if (o.w_bits) on["w_bits"] = *o.w_bits;
      if (o.a_bits) on["a_bits"] = *o.a_bits;
      q["overrides"].push_back(on);
    }
    q["calibrators"] = plugin_list_yaml(cfg.calibrators);
    q["rounding"] = plugin_list_yaml(cfg.rounding);
    if (!cfg.passes.empty()) q["passes"] = plugin_list_yaml(cfg.passes);
    resolved["quantization"] = q;
    resolved["calibration_batch_size"] = cfg.batch_size;
    resolved["calibration_counts"] = cfg.calibration_counts;
    resolved["calibration_repeats"] = cfg.repeats;
    for (const auto* list : {&cfg.calibration_domains, &cfg.test_domains})
      for (const auto& d : *list) {
        YAML::Node dn;
        dn["dataset"] = d.dataset;
        if (!d.synthesizer.empty()) {
          dn["synthesizer"] = plugin_list_yaml(d.synthesizer)[0];
          for (const auto& m : d.synthesis_models) dn["models"].push_back(m);
        }
        if (d.fixed_split) dn["split"] = d.split == Split::Train ? "train" : "test";
        for (const auto& t : d.transforms) {
          YAML::Node tn;
          tn["name"] = t.name;
          tn["severity"] = t.severity;
          dn["transforms"].push_back(tn);
        }
        resolved["domains"][d.name] = dn;
      }
    for (const auto& d : cfg.test_domains) resolved["test"]["domains"].push_back(d.name);
    resolved["test"]["count"] = cfg.test_count;
    YAML::Emitter out;
    out << resolved;
    *resolved_yaml = std::string("# Resolved by xdq: every default filled in, with hashes of model files and\n"
                                 "# calibration sets (FNV-1a 64) so a result traces back to its inputs.\n") +
                     out.c_str() + "\n";
  }
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
  for (const auto& [name, bytes] : files)
    if (name.size() > 11 && name.compare(name.size() - 11, 11, "_curves.png") == 0) curves += "![" + name + "](" + name + ")\n\n";
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
