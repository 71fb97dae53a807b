#include "pipeline.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iomanip>
#include <optional>
#include <ostream>
#include <sstream>

#include <ATen/Parallel.h>

#include "xdq/error.h"
#include "xdq/exec/executor.h"
#include "xdq/experiment/diagnostics.h"
#include "xdq/export/runtime.h"
#include "xdq/files.h"
#include "xdq/ir/passes.h"
#include "xdq/plugin/quantize.h"
#include "xdq/parallel.h"

namespace xdq {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

Pipeline::Pipeline(const ExperimentConfig& cfg, PluginRegistry& registry, DomainCache& domains, std::ostream& progress,
                   const std::vector<bool>& needed, bool evaluate)
    : cfg_(cfg), registry_(registry), domains_(domains), progress_(progress), evaluate_(evaluate) {
  models_.resize(cfg.models.size());
  for (std::size_t i = 0; i < cfg.models.size(); ++i) {
    if (!needed.empty() && !needed[i]) continue;  // a job of another model: not prepared in this process
    const ModelEntry& entry = cfg.models[i];
    Model m{prepare_model(entry, cfg.execution, cfg.test, cfg.quantization, domains, progress), {}, {}, {}};
    const Executor fp32(m.prepared.model.graph);
    m.fp32_top1.assign(m.prepared.tests.size(), 0.0);
    for (std::size_t t = 0; evaluate && t < m.prepared.tests.size(); ++t)
      m.fp32_top1[t] = top1_accuracy([&](const at::Tensor& x) { return fp32.forward(x); }, m.prepared.tests[t], m.prepared.pre,
                                     cfg.calibration.batch_size, &progress, entry.name + " FP32 on " + m.prepared.tests[t].name());
    release_freed_memory();
    m.folded = m.prepared.model.graph;
    m.trace = {file_hash(entry.path), m.prepared.pre, m.prepared.shape, QuantizeRecipe::fold(m.folded, cfg.quantization.fold_bn)};
    models_[i] = std::move(m);
  }
}

const CalibrationSet& Pipeline::calibration_set(const JobSpec& job) {
  if (const auto it = calibration_.find(&job); it != calibration_.end()) return it->second;
  load_scoring_targets(job);
  CalibrationSet set;
  if (job.selector) {
    const Dataset& chosen = (selected_[&job] = select_calibration_set(job)).set;
    set = {&chosen, chosen.images};
  } else {
    set = domains_.calibration_images(*job.domain, models_[job.model].prepared.shape, job.count, job.seed,
                                      job.entry);
  }
  return calibration_.emplace(&job, std::move(set)).first->second;
}

namespace {
// Chosen images per source domain of the pool (a mixture's parts, else the pool's own domain).
std::map<std::string, std::int64_t> composition(const CalibrationSet& pool, const std::string& domain,
                                                const std::vector<std::int64_t>& rows) {
  static const std::vector<std::pair<std::string, std::int64_t>> none;
  const auto& parts = pool.memory ? pool.memory->parts : none;
  std::map<std::string, std::int64_t> out;
  for (std::int64_t row : rows) {
    std::string source = domain;
    std::int64_t end = 0;
    for (const auto& [name, size] : parts)
      if (row < (end += size)) {
        source = name;
        break;
      }
    ++out[source];
  }
  return out;
}
}  // namespace

Pipeline::Selected Pipeline::select_calibration_set(const JobSpec& job) {
  const Model& m = models_[job.model];
  const ModelEntry* entry = job.entry;
  const CalibrationSet pool = domains_.pool_images(*job.domain, m.prepared.shape, cfg_.calibration.pool_size, job.seed, entry);
  const std::int64_t pool_size = pool.images.size();
  if (job.count > pool_size)
    throw Error(cfg_.file + ": calibration.count: " + std::to_string(job.count) + " images asked of a pool of " +
                std::to_string(pool_size) + " (domain '" + job.domain->name + "')");
  const PluginChoice& choice = *job.selector;
  const auto selector = registry_.load<Selector>(choice.name, choice.options);
  SelectionContext context;
  context.graph = &m.prepared.model.graph;
  context.preprocess = m.prepared.pre;
  context.pool = pool.images;
  if (cfg_.calibration.target_sample.count > 0) {  // another seed than the pool's: not the same draw when the domains coincide
    context.target = domains_.get(cfg_.calibration.target_sample.domain, Split::Train, m.prepared.shape, cfg_.calibration.target_sample.count,
                                  job.seed + 7777, entry).images;
    if (context.target.size(0) < cfg_.calibration.target_sample.count)
      throw Error(cfg_.file + ": calibration.target_sample.count: " + std::to_string(cfg_.calibration.target_sample.count) +
                  " images asked of domain '" + cfg_.calibration.target_sample.domain.name + "', which holds " +
                  std::to_string(context.target.size(0)));
  }
  context.count = job.count;
  context.seed = job.seed;
  context.batch_size = cfg_.calibration.batch_size;
  context.device = cfg_.execution.torch_device();
  context.progress = &progress_;
  const auto start = std::chrono::steady_clock::now();  // the selector's work only: the pool is loaded
  const Selection chosen = selector.call("select", [&](const Selector& s) { return s.select(context); });
  const double seconds = seconds_since(start);
  // The plugin's answer is checked before any image is used: count, range, no repeats.
  std::vector<char> seen(static_cast<std::size_t>(pool_size), 0);
  const std::string who = "plugin '" + choice.name + "' (" + selector.record().path + ")";
  if (static_cast<std::int64_t>(chosen.indices.size()) != job.count)
    throw Error(who + " chose " + std::to_string(chosen.indices.size()) + " images, not " + std::to_string(job.count));
  for (std::int64_t row : chosen.indices) {
    if (row < 0 || row >= pool_size) throw Error(who + " chose row " + std::to_string(row) + " of a pool of " + std::to_string(pool_size));
    if (seen[static_cast<std::size_t>(row)]++) throw Error(who + " chose row " + std::to_string(row) + " twice");
  }
  Selected out;
  out.set = Dataset{job.domain->name, pool.images.rows(chosen.indices), {}, {}};
  if (pool.memory && pool.memory->labeled())
    out.set.labels = pool.memory->labels.index_select(0, at::tensor(chosen.indices, at::kLong));
  SelectionRecord& r = out.record;
  r.selector = choice.label;
  for (const auto& [name, value] : choice.options.values()) r.options[name] = to_string(value);
  r.passes = selector.call("passes", [](const Selector& s) { return s.passes(); });
  r.pool_size = pool_size;
  if (context.target.defined()) r.target = cfg_.calibration.target_sample.domain.name;
  r.composition = composition(pool, job.domain->name, chosen.indices);
  r.measures = chosen.measures;
  r.seconds = seconds;
  progress_ << "xdq: " << job.entry->name << ": " << choice.label << " chose " << job.count << " of "
            << pool_size << " images of '" << job.domain->name << "' (seed " << job.seed << ") in " << std::fixed
            << std::setprecision(1) << r.seconds << " s:";
  for (const auto& [source, n] : r.composition) progress_ << " " << source << " " << n;
  progress_ << std::endl;
  return out;
}

// Per-layer shift diagnostics: for the first bit setting and calibrator of each job's first set.
void Pipeline::record_layer_shift(const JobSpec& job, const QuantizedModel& calibrated, const CalibrationImages& images,
                                  const std::string& setting, JobOutput& out) const {
  const PreparedModel& p = models_[job.model].prepared;
  std::vector<std::pair<std::string, at::Tensor>> tests;
  for (std::size_t t = 0; t < p.tests.size(); ++t)
    tests.emplace_back(cfg_.test.domains[t].name, p.pre.apply(p.tests[t].head(cfg_.test.layer_shift_images).images));
  for (const LayerShift& l : measure_layer_shift(calibrated, images.head(cfg_.test.layer_shift_images), tests,
                                                 cfg_.calibration.batch_size))
    out.layer_shift.push_back({job.entry->name, setting, job.set_name(), l.layer, l.domain,
                               l.clipped_fraction, l.tv_distance});
}

RunResult run_header(const std::string& model, const std::vector<PluginChoice>& passes, const JobSpec& job,
                     const RunSpec& spec, std::int64_t count, const SelectionRecord& selection) {
  RunResult run;
  run.selection = selection;
  run.id = spec.id;
  run.model = model;
  run.w_bits = spec.bits->w_bits;
  run.a_bits = spec.bits->a_bits;
  run.calibrator = spec.calibrator->label;
  run.rounding = spec.rounding->label;
  for (const auto& [name, value] : spec.calibrator->options.values()) run.calibrator_options[name] = to_string(value);
  for (const auto& [name, value] : spec.rounding->options.values()) run.rounding_options[name] = to_string(value);
  run.calibration_domain = job.domain->name;
  run.calibration_seed = job.seed;
  for (const PluginChoice& pass : passes) run.passes.push_back(pass.label);
  run.calibration_source = split_name(*job.domain, Split::Train);
  run.calibration_count = count;
  return run;
}

RunResult Pipeline::unevaluated(const JobSpec& job, const RunSpec& spec) const {
  RunResult run = run_header(job.entry->name, cfg_.quantization.passes, job, spec, calibration_.at(&job).images.size(), selection(job));
  for (const DomainSpec& domain : cfg_.test.domains) run.results.emplace_back().domain = domain.name;
  return run;
}

RunResult Pipeline::evaluate(const JobSpec& job, const RunSpec& spec, const QuantizedModel& quantized,
                             std::ostream& log, std::vector<std::vector<at::Tensor>>* predictions) const {
  const Model& m = models_[job.model];
  if (!evaluate_) return unevaluated(job, spec);
  RunResult run = run_header(job.entry->name, cfg_.quantization.passes, job, spec, calibration_.at(&job).images.size(), selection(job));
  const Executor exec = quantized.executor();
  for (std::size_t t = 0; t < m.prepared.tests.size(); ++t) {
    DomainResult d;
    d.domain = cfg_.test.domains[t].name;
    d.n = m.prepared.tests[t].size();
    d.fp32_top1 = m.fp32_top1[t];
    std::vector<at::Tensor>* predicted = nullptr;
    if (predictions) predicted = &predictions->emplace_back();
    d.quant_top1 = top1_accuracy([&](const at::Tensor& x) { return exec.forward(x); }, m.prepared.tests[t],
                                 m.prepared.pre, cfg_.calibration.batch_size, &log, spec.id + " on " + d.domain, predicted,
                                 &d.correct);
    release_freed_memory();
    run.results.push_back(d);
  }
  return run;
}

// "[k/N] " and, while runs remain, the time they should take at the pace so far.
std::string Pipeline::run_counter() const {
  const std::size_t done = ++finished_runs_;
  std::ostringstream s;
  s << "[" << done << "/" << total_runs_ << "] ";
  if (done < total_runs_) {
    const double per_run = seconds_since(counting_since_) / static_cast<double>(done);
    s << "(ETA " << std::fixed << std::setprecision(0) << per_run * static_cast<double>(total_runs_ - done) << " s) ";
  }
  return s.str();
}

RunResult Pipeline::failed(const JobSpec& job, const RunSpec& spec, const std::string& error, std::ostream& log) const {
  if (cfg_.execution.on_error == "stop") throw Error(spec.id + ": " + error);
  RunResult run = run_header(job.entry->name, cfg_.quantization.passes, job, spec, calibration_.at(&job).images.size(), selection(job));
  run.error = error;
  log << run_counter() << run.id << "  FAILED: " << error << std::endl;
  return run;
}

QuantizeRecipe Pipeline::recipe(const JobSpec& job, const RunSpec& spec, std::ostream& log) const {
  const RecipeSettings settings =
      recipe_settings(cfg_.quantization, cfg_.calibration, cfg_.execution.torch_device(),
                      ptq_settings(cfg_.quantization, *spec.bits), *spec.calibrator, *spec.rounding, job.seed);
  return QuantizeRecipe(registry_, settings, log);
}

// Every test domain's unlabeled sample for scoring, once per model (one seed for the experiment: every run
// of a model is scored against the same images); loaded before the jobs run, as the sets are.
void Pipeline::load_scoring_targets(const JobSpec& job) {
  if (cfg_.test.scorers.empty() || scoring_targets_.count(job.model)) return;
  std::vector<at::Tensor>& targets = scoring_targets_[job.model];
  for (DomainSpec domain : cfg_.test.domains) {
    domain.fixed_split = false;  // the train split, also of a domain whose tests read a named split: no test image
    at::Tensor images = domains_.get(domain, Split::Train, models_[job.model].prepared.shape, cfg_.test.scoring_target_count,
                                     cfg_.execution.seed + 9001, job.entry).images;
    if (images.size(0) < 2)
      throw Error(cfg_.file + ": scoring.target_count: domain '" + domain.name + "' gives " + std::to_string(images.size(0)) +
                  " unlabeled images from its train split; scorers need two or more");
    targets.push_back(images);
  }
}

JobScoring Pipeline::job_scoring(const JobSpec& job) const {
  const Model& m = models_[job.model];
  return JobScoring(registry_, cfg_.test.scorers, m.prepared.model.graph, m.prepared.pre, calibration_.at(&job).images,
                    scoring_targets_.at(job.model), cfg_.calibration.batch_size, cfg_.execution.torch_device());
}

void Pipeline::run_rounding(const JobSpec& job, const RunSpec& spec, const QuantizedModel& calibrated,
                            const CalibrationData& data, const JobScoring* scoring, std::ostream& log, JobOutput& out) const {
  const auto start = std::chrono::steady_clock::now();
  std::vector<UnitTiming> timings;
  const QuantizedModel quantized = recipe(job, spec, log).rounded(calibrated, data, {&out.files, spec.id, &timings});
  const bool exported =
      cfg_.exports.selects(spec.id, job.entry->name, spec.bits->label(), spec.calibrator->label, spec.rounding->label);
  std::vector<std::vector<at::Tensor>> predictions;
  RunResult run = evaluate(job, spec, quantized, log, exported ? &predictions : nullptr);
  if (exported) export_run(job, quantized, data.images, predictions, log, run);
  if (scoring) {
    const auto scores = scoring->scores(quantized);
    for (std::size_t t = 0; t < run.results.size(); ++t) run.results[t].scores = scores[t];
  }
  run.seconds = seconds_since(start);
  run.peak_rss_mib = peak_resident_mib();
  run.units = std::move(timings);
  out.runs.push_back(std::move(run));
}

void Pipeline::export_run(const JobSpec& job, const QuantizedModel& quantized, const CalibrationImages& images,
                          const std::vector<std::vector<at::Tensor>>& predictions, std::ostream& log, RunResult& run) const {
  ExportRecord& record = run.exported;
  record.dir = export_flat_ ? export_root_ : (std::filesystem::path(export_root_) / file_name_safe(run.id)).string();
  record.runtime = cfg_.exports.runtime == "none" ? "" : cfg_.exports.runtime;
  ExportedModel exported;
  try {
    if (export_root_.empty()) throw Error("no output folder to export into");
    ExportRequest request;
    request.formats = cfg_.exports.formats;
    request.runtime = record.runtime;
    request.float_model = cfg_.exports.timing;
    request.example = images.head(16);
    request.pre = models_[job.model].prepared.pre;
    exported = export_quantized_model(quantized, request, record.dir);
    record.files = exported.files;
    record.layers = exported.layers;
    log << run.id << ": exported to " << record.dir << std::endl;
  } catch (const std::exception& e) {
    record.error = e.what();
    log << run.id << ": export failed: " << e.what() << std::endl;
    return;
  }
  if (!record.runtime.empty()) runtime_check(job, quantized, exported, predictions, log, run);
  if (cfg_.exports.timing && record.runtime_error.empty()) {
    try {  // one image's shape: the timing feeds its own batches
      record.timings = time_onnxruntime(record.dir, images.head(1).sizes().slice(1).vec(), {1, 64}, {1, 2},
                                        static_cast<int>(cfg_.exports.timing_rounds));
    } catch (const std::exception& e) {
      record.runtime_error = e.what();
      log << run.id << ": timing failed: " << e.what() << std::endl;
    }
  }
}

namespace {
// Each quantized activation as the runtime computes it against the simulation, on one batch.
std::vector<ExportRecord::LayerGap> layer_gaps(const QuantizedModel& quantized, const std::map<int, std::string>& tensors,
                                               ModelRuntime& runtime, const at::Tensor& batch) {
  std::vector<int> indices;
  std::vector<std::string> names;
  for (const auto& [index, name] : tensors) {
    if (quantized.activations()[index].qparams.per_channel()) continue;
    indices.push_back(index);
    names.push_back(name);
  }
  const std::vector<at::Tensor> theirs = runtime.forward(batch, names);
  const std::vector<c10::IValue> ours = quantized.executor().all_values(batch);
  std::vector<ExportRecord::LayerGap> gaps;
  for (std::size_t k = 0; k < indices.size(); ++k) {
    const ActivationQuantizer& a = quantized.activations()[indices[k]];
    const at::Tensor simulated = ours[a.value].toTensor().cpu();
    const at::Tensor steps = (theirs[k].reshape(simulated.sizes()) - simulated).abs() / a.qparams.scale.item<float>();
    gaps.push_back({a.name, steps.gt(0.5).to(at::kDouble).mean().item<double>(), steps.max().item<double>()});
  }
  return gaps;
}
}  // namespace

// The exported model in the int8 runtime on every test domain, beside the simulated model: its top-1 and the
// images where the two top-1 differ; layer by layer on the first batch of the first test domain.
void Pipeline::runtime_check(const JobSpec& job, const QuantizedModel& quantized, const ExportedModel& exported,
                             const std::vector<std::vector<at::Tensor>>& predictions, std::ostream& log,
                             RunResult& run) const {
  const Model& m = models_[job.model];
  try {
    const std::unique_ptr<ModelRuntime> opened = open_runtime(run.exported.runtime, exported, at::get_num_threads());
    ModelRuntime& runtime = *opened;
    run.exported.int8_layers = runtime.int8_layers();
    if (!m.prepared.tests.empty()) {
      const at::NoGradGuard no_grad;
      try {
        run.exported.layer_gaps = layer_gaps(quantized, exported.runtime_tensors, runtime,
                                             m.prepared.pre.apply(m.prepared.tests[0].head(64).images));
      } catch (const std::exception& e) {  // the comparison only: runtime top-1 is measured all the same
        log << run.id << ": no layer-by-layer comparison: " << e.what() << std::endl;
      }
    }
    for (std::size_t t = 0; t < m.prepared.tests.size(); ++t) {
      DomainResult& d = run.results[t];
      std::vector<at::Tensor> predicted;  // the same batches, in the same order, as evaluate() saw
      d.runtime_top1 = top1_accuracy([&](const at::Tensor& x) { return runtime.forward(x); }, m.prepared.tests[t],
                                     m.prepared.pre, cfg_.calibration.batch_size, &log, run.id + " in " + runtime.name() + " on " + d.domain, &predicted);
      std::int64_t differing = 0;
      for (std::size_t b = 0; b < predicted.size(); ++b)
        differing += predicted[b].ne(predictions.at(t).at(b)).sum().item<std::int64_t>();
      d.runtime_disagreements = differing;
    }
  } catch (const std::exception& e) {
    run.exported.runtime_error = e.what();
    log << run.id << ": runtime check failed: " << e.what() << std::endl;
  }
}

namespace {
// A finished run's progress line: top-1 per test domain (and the runtime's), or "scored" without evaluation.
std::string result_line(const RunResult& run, bool evaluated) {
  std::ostringstream line;
  line << std::fixed << std::setprecision(4);
  for (const DomainResult& d : run.results) {
    line << "  " << d.domain;
    if (!evaluated) {
      line << " scored";
      continue;
    }
    line << " " << d.quant_top1;
    if (d.has_runtime()) line << " (runtime " << d.runtime_top1 << ")";
  }
  line << "  (" << std::setprecision(1) << run.seconds << " s)";
  return line.str();
}
}  // namespace

JobOutput Pipeline::run(const JobSpec& job, std::ostream& log, StatisticsCache& statistics) const {
  JobOutput out;
  const Model& m = models_[job.model];
  const Preprocess& pre = m.prepared.pre;
  const CalibrationData data = calibration_data(
      calibration_.at(&job).images.mapped([&pre](const at::Tensor& x) { return pre.apply(x); }), pre, &statistics);
  // Without passes of stage BeforeQuantization the folded graph is the model's, shared by every job; with
  // them, one adapted graph per activation bit width (passes read it: PassContext::a_bits).
  bool adapts = false;
  std::optional<JobScoring> scoring;
  try {
    adapts = recipe(job, job.runs.front(), log).adapts_to_data();
    if (!cfg_.test.scorers.empty()) scoring.emplace(job_scoring(job));
  } catch (const std::exception& e) {
    for (const RunSpec& spec : job.runs) out.runs.push_back(failed(job, spec, e.what(), log));
    return out;
  }
  if (scoring && !evaluate_ && !scoring->reads_quantized_model()) {  // scores of the FP model only: nothing to quantize
    for (const RunSpec& spec : job.runs) {
      RunResult run = unevaluated(job, spec);
      for (std::size_t t = 0; t < run.results.size(); ++t) run.results[t].scores = scoring->fp_scores()[t];
      log << run_counter() << run.id << " scored" << std::endl;
      out.runs.push_back(std::move(run));
    }
    return out;
  }
  std::map<int, Graph> adapted;
  const auto folded_for = [&](const RunSpec& spec) -> const Graph& {
    if (!adapts) return m.folded;
    auto it = adapted.find(spec.bits->a_bits);
    if (it == adapted.end())
      it = adapted.emplace(spec.bits->a_bits, recipe(job, spec, log).adapted(m.prepared.model.graph, data)).first;
    return it->second;
  };
  // Runs come in (bits, calibrator) groups sharing one calibrated model, one run per rounding method.
  for (std::size_t first = 0, end = 0; first < job.runs.size(); first = end) {
    const RunSpec& head = job.runs[first];
    end = first + 1;
    while (end < job.runs.size() && job.runs[end].bits == head.bits && job.runs[end].calibrator == head.calibrator) ++end;
    const auto wanted = [&](std::size_t r) { return only_run_.empty() || job.runs[r].id == only_run_; };
    bool any = false;
    for (std::size_t r = first; r < end; ++r) any = any || wanted(r);
    if (!any) continue;
    const auto calibration_start = std::chrono::steady_clock::now();
    std::optional<QuantizedModel> calibrated;
    try {
      calibrated.emplace(recipe(job, head, log).calibrated(folded_for(head), data));
      if (cfg_.test.layer_shift_images > 0 && first == 0 && job.first_set)
        record_layer_shift(job, *calibrated, data.images, head.bits->label() + "/" + head.calibrator->label, out);
    } catch (const std::exception& e) {
      for (std::size_t r = first; r < end; ++r)
        if (wanted(r)) out.runs.push_back(failed(job, job.runs[r], e.what(), log));
      continue;
    }
    const double calibration_seconds = seconds_since(calibration_start);
    for (std::size_t r = first; r < end; ++r) {
      if (!wanted(r)) continue;
      try {
        run_rounding(job, job.runs[r], *calibrated, data, scoring ? &*scoring : nullptr, log, out);
      } catch (const std::exception& e) {
        out.runs.push_back(failed(job, job.runs[r], e.what(), log));
        continue;
      }
      RunResult& run = out.runs.back();
      run.seconds += calibration_seconds;
      log << run_counter() << run.id << result_line(run, evaluate_) << std::endl;
    }
  }
  return out;
}

}  // namespace xdq
