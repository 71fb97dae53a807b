#include "xdq/report/results_tables.h"
#include "xdq/version.h"

#include <algorithm>
#include <functional>
#include <cmath>
#include <iomanip>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

namespace xdq {

Interval top1_interval(double top1, std::int64_t n) {
  return bootstrap_interval(std::llround(top1 * static_cast<double>(n)), n);
}

std::string run_setting(const RunResult& run) {
  return "w" + std::to_string(run.w_bits) + "a" + std::to_string(run.a_bits) + "/" + run.calibrator + "/" + run.rounding;
}

const DomainResult* worst_domain(const RunResult& run) {
  if (run.results.size() < 2) return nullptr;
  return &*std::min_element(run.results.begin(), run.results.end(),
                            [](const DomainResult& a, const DomainResult& b) { return a.quant_top1 < b.quant_top1; });
}

std::string results_json(const ExperimentResults& results) {
  nlohmann::ordered_json root;
  root["experiment"] = results.experiment;
  root["xdq_version"] = XDQ_VERSION;
  root["runs"] = nlohmann::ordered_json::array();
  for (const auto& r : results.runs) {
    nlohmann::ordered_json run;
    run["id"] = r.id;
    run["model"] = r.model;
    run["w_bits"] = r.w_bits;
    run["a_bits"] = r.a_bits;
    run["calibrator"] = r.calibrator;
    run["rounding"] = r.rounding;
    run["calibrator_options"] = r.calibrator_options;
    run["rounding_options"] = r.rounding_options;
    if (!r.passes.empty()) run["passes"] = r.passes;
    run["calibration"] = {{"source", r.calibration_source}, {"count", r.calibration_count}, {"domain", r.calibration_domain},
                          {"seed", r.calibration_seed}};
    if (r.selection.requested()) run["calibration"]["selection"] = nlohmann::ordered_json(selection_json(r.selection));
    run["results"] = nlohmann::ordered_json::array();
    for (const auto& d : r.results) {
      nlohmann::json details;
      add_cell_details_json(d, details);
      const Interval fp32 = top1_interval(d.fp32_top1, d.n), quant = top1_interval(d.quant_top1, d.n);
      nlohmann::ordered_json dj = {{"domain", d.domain}, {"n", d.n}, {"fp32_top1", d.fp32_top1}, {"quant_top1", d.quant_top1},
                                   {"fp32_top1_ci", {fp32.low, fp32.high}}, {"quant_top1_ci", {quant.low, quant.high}}};
      if (!details.is_null()) dj.update(nlohmann::ordered_json(details));
      run["results"].push_back(dj);
    }
    if (const DomainResult* worst = worst_domain(r))
      run["worst_domain"] = {{"domain", worst->domain}, {"quant_top1", worst->quant_top1}, {"drop", worst->quant_top1 - worst->fp32_top1}};
    if (r.exported.requested()) run["export"] = nlohmann::ordered_json(export_json(r.exported));
    run["seconds"] = r.seconds;
    run["peak_rss_mib"] = r.peak_rss_mib;
    for (const auto& u : r.units)
      run["units"].push_back({{"name", u.name}, {"iterations", u.iterations}, {"seconds_per_iteration", u.seconds_per_iteration},
                              {"caching_seconds", u.caching_seconds}, {"step_iterations", u.step_iterations},
                              {"step_seconds_per_iteration", u.step_seconds_per_iteration},
                              {"step_caching_seconds", u.step_caching_seconds}, {"seconds", u.seconds}});
    if (r.failed()) {
      run["status"] = "failed";
      run["error"] = r.error;
    }
    root["runs"].push_back(run);
  }
  for (const ScoreDeclaration& s : results.scores)
    root["scores"].push_back({{"name", s.name}, {"scorer", s.scorer}, {"higher_is_better", s.higher_is_better}, {"doc", s.doc}});
  if (!results.layer_shift.empty()) {
    root["layer_shift"] = nlohmann::ordered_json::array();
    for (const auto& l : results.layer_shift)
      root["layer_shift"].push_back({{"model", l.model}, {"setting", l.setting}, {"calibration_domain", l.calibration_domain},
                                     {"layer", l.layer}, {"domain", l.domain}, {"clipped_fraction", l.clipped_fraction},
                                     {"tv_distance", l.tv_distance}});
  }
  return root.dump(2) + "\n";
}

std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\r\n") == std::string::npos) return text;
  std::string out = "\"";
  for (char c : text) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string layer_shift_csv(const ExperimentResults& results) {
  std::ostringstream out;
  out << "model,setting,calibration_domain,layer,test_domain,clipped_fraction,tv_distance\n" << std::setprecision(8);
  for (const auto& l : results.layer_shift)
    out << csv_field(l.model) << "," << csv_field(l.setting) << "," << csv_field(l.calibration_domain) << ","
        << csv_field(l.layer) << "," << csv_field(l.domain) << "," << l.clipped_fraction << "," << l.tv_distance << "\n";
  return out.str();
}

std::string results_csv(const ExperimentResults& results) {
  std::ostringstream out;
  out << "id,model,w_bits,a_bits,calibrator,rounding,calibration_source,calibration_count,calibration_domain,"
         "calibration_seed,domain,n,fp32_top1,quant_top1,seconds,passes,status,calibrator_options,rounding_options,"
         "runtime_top1,runtime_disagreements,selector,composition,quant_top1_low,quant_top1_high\n";
  out << std::setprecision(6);
  const auto options_text = [](const std::map<std::string, std::string>& options) {
    std::string text;  // name=value;name=value
    for (const auto& [name, value] : options) text += (text.empty() ? "" : ";") + name + "=" + value;
    return csv_field(text);
  };
  for (const auto& r : results.runs) {
    std::string passes, composition;  // a+b; source=n;source=n
    for (const auto& p : r.passes) passes += (passes.empty() ? "" : "+") + p;
    for (const auto& [source, n] : r.selection.composition)
      composition += (composition.empty() ? "" : ";") + source + "=" + std::to_string(n);
    const auto row = [&](const DomainResult* d) {
      out << csv_field(r.id) << "," << csv_field(r.model) << "," << r.w_bits << "," << r.a_bits << "," << csv_field(r.calibrator)
          << "," << csv_field(r.rounding) << "," << csv_field(r.calibration_source) << "," << r.calibration_count << ","
          << csv_field(r.calibration_domain) << "," << r.calibration_seed << ",";
      if (d)
        out << csv_field(d->domain) << "," << d->n << "," << d->fp32_top1 << "," << d->quant_top1;
      else
        out << ",,,";  // a failed run: one row with no numbers, so it is neither absent nor read as 0 %
      out << "," << r.seconds << "," << csv_field(passes) << "," << (d ? "ok" : "failed") << ","
          << options_text(r.calibrator_options) << "," << options_text(r.rounding_options) << ",";
      if (d && d->has_runtime()) out << d->runtime_top1 << "," << d->runtime_disagreements;
      else out << ",";
      out << "," << csv_field(r.selection.selector) << "," << csv_field(composition) << ",";
      if (d) {
        const Interval ci = top1_interval(d->quant_top1, d->n);
        out << ci.low << "," << ci.high;
      } else {
        out << ",";
      }
      out << "\n";
    };
    if (r.failed()) row(nullptr);
    for (const auto& d : r.results) row(&d);
  }
  return out.str();
}

namespace {
// Runs tested on several domains: the domain where each does worst, its drop to FP32 there and its distance
// to the run's best domain.
std::string worst_domain_markdown(const ExperimentResults& results) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(2);
  for (const auto& r : results.runs) {
    const DomainResult* worst = worst_domain(r);
    if (!worst) continue;
    if (out.tellp() == 0)
      out << "\n### Worst test domain per run\n\n| run | worst test domain | quantized top-1 | drop to FP32 (pt) | "
          << "below the best domain (pt) |\n|---|---|---:|---:|---:|\n";
    const double best = std::max_element(r.results.begin(), r.results.end(), [](const DomainResult& a, const DomainResult& b) {
                          return a.quant_top1 < b.quant_top1;
                        })->quant_top1;
    out << "| " << r.id << " | " << worst->domain << " | " << 100 * worst->quant_top1 << " % | " << std::showpos
        << 100 * (worst->quant_top1 - worst->fp32_top1) << " | " << 100 * (worst->quant_top1 - best) << std::noshowpos << " |\n";
  }
  return out.str();
}
}  // namespace

std::string results_markdown(const ExperimentResults& results, const std::string& header) {
  std::ostringstream out;
  out << "# " << results.experiment << "\n\n" << header << "\n";
  out << "| model | bits | calibrator | rounding | calibration | test domain | n | FP32 top-1 | quantized top-1 | 95 % interval | drop (pt) |\n";
  out << "|---|---|---|---|---|---|---:|---:|---:|---:|---:|\n";
  out << std::fixed;
  for (const auto& r : results.runs)
    for (const auto& d : r.results) {
      const Interval ci = top1_interval(d.quant_top1, d.n);
      out << "| " << r.model << " | w" << r.w_bits << "a" << r.a_bits << " | " << r.calibrator << " | " << r.rounding
          << " | " << r.calibration_domain << " (" << r.calibration_count << ") | " << d.domain << " | " << d.n
          << " | " << std::setprecision(2) << 100 * d.fp32_top1 << " % | " << 100 * d.quant_top1 << " % | " << 100 * ci.low
          << "-" << 100 * ci.high << " | " << std::showpos << 100 * (d.quant_top1 - d.fp32_top1) << std::noshowpos << " |\n";
    }
  out << "\n95 % interval: percentile bootstrap over the test images (exact: the quantiles of Binomial(n, top-1)).\n";
  out << worst_domain_markdown(results);
  if (results.failed_runs() > 0) {
    out << "\n## Failed runs\n\n| run | error |\n|---|---|\n";
    for (const auto& r : results.runs)
      if (r.failed()) out << "| " << r.id << " | " << r.error << " |\n";
  }
  out << export_markdown(results);
  return out.str();
}

namespace {
// export.timing: per exported run, ONNX Runtime's float model against its int8 model.
std::string runtime_speed_markdown(const ExperimentResults& results) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(2);
  for (const auto& r : results.runs) {
    if (r.exported.timings.empty()) continue;
    if (out.tellp() == 0)
      out << "\n## Runtime speed\n\nONNX Runtime's CPU execution provider (graph optimizations on) on `model_fp32.onnx` "
          << "and on `model.onnx`: median milliseconds per batch over interleaved rounds (`export.timing_rounds`); above 1, "
          << "int8 is faster. Timings taken while other jobs ran share their cores.\n\n"
          << "| run | batch | threads | float ms | int8 ms | float / int8 |\n|---|---:|---:|---:|---:|---:|\n";
    for (const auto& t : r.exported.timings)
      out << "| " << r.id << " | " << t.batch << " | " << t.threads << " | " << t.float_ms << " | " << t.int8_ms << " | "
          << t.float_ms / t.int8_ms << " |\n";
  }
  return out.str();
}
}  // namespace

std::string export_markdown(const ExperimentResults& results) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(2);
  const bool any_runtime = std::any_of(results.runs.begin(), results.runs.end(), [](const RunResult& r) {
    return std::any_of(r.results.begin(), r.results.end(), [](const DomainResult& d) { return d.has_runtime(); });
  });
  if (any_runtime) {
    out << "\n## Simulation vs runtime\n\nThe exported model run by the int8 runtime (`opencv`: model_opencv.onnx in "
        << "OpenCV's DNN module; `onnxruntime`: model.onnx in ONNX Runtime's CPU execution provider); differing: test "
        << "images whose top-1 differs from the simulated model's; integer layers: conv/linear layers the runtime ran "
        << "as integer kernels.\n\n"
        << "| run | runtime | test domain | quantized top-1 | runtime top-1 | runtime - simulated (pt) | differing | integer layers |\n"
        << "|---|---|---|---:|---:|---:|---:|---:|\n";
    for (const auto& r : results.runs)
      for (const auto& d : r.results)
        if (d.has_runtime())
          out << "| " << r.id << " | " << r.exported.runtime << " | " << d.domain << " | " << 100 * d.quant_top1 << " % | " << 100 * d.runtime_top1
              << " % | " << std::showpos << 100 * (d.runtime_top1 - d.quant_top1) << std::noshowpos << " | "
              << d.runtime_disagreements << " of " << d.n << " | " << r.exported.int8_layers << " of " << r.exported.layers
              << " |\n";
    out << "\nLayer by layer (the first test batch, each quantized activation in the runtime against the simulation): "
        << "the first activation whose integer codes differ, and the one where most differ.\n\n"
        << "| run | first differing activation | most differing activation |\n|---|---|---|\n";
    const auto describe = [](const ExportRecord::LayerGap& g) {
      std::ostringstream d;
      d << std::setprecision(3) << g.activation << " (" << 100 * g.differing << " % of codes, up to " << g.max_steps << " steps)";
      return d.str();
    };
    for (const auto& r : results.runs) {
      const auto& gaps = r.exported.layer_gaps;
      if (gaps.empty()) continue;
      const auto first = std::find_if(gaps.begin(), gaps.end(), [](const auto& g) { return g.differing > 0; });
      const auto most = std::max_element(gaps.begin(), gaps.end(), [](const auto& a, const auto& b) { return a.differing < b.differing; });
      out << "| " << r.id << " | " << (first == gaps.end() ? "none" : describe(*first)) << " | "
          << (first == gaps.end() ? "none" : describe(*most)) << " |\n";
    }
  }
  out << runtime_speed_markdown(results);
  std::ostringstream problems;
  for (const auto& r : results.runs) {
    if (!r.exported.error.empty()) problems << "| " << r.id << " | export | " << r.exported.error << " |\n";
    if (!r.exported.runtime_error.empty()) problems << "| " << r.id << " | runtime | " << r.exported.runtime_error << " |\n";
  }
  if (!problems.str().empty()) out << "\n## Failed exports\n\n| run | step | error |\n|---|---|---|\n" << problems.str();
  return out.str();
}

namespace {
// Over repeats (seeds): the mean, and the sample standard deviation (0 for one value).
double mean_of(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x / static_cast<double>(v.size());
  return s;
}
double std_of(const std::vector<double>& v) {
  if (v.size() < 2) return 0;
  const double m = mean_of(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m) / static_cast<double>(v.size() - 1);
  return std::sqrt(s);
}

// The runs of one selection table: a model, a setting and a set size; per selector, in order of first
// appearance, the per-seed mean top-1 over the test domains, compositions and measures.
struct SelectionGroup {
  std::string title;
  std::vector<std::string> selectors, sources;
  std::map<std::string, std::vector<double>> top1;  // selector -> per run (seed)
  std::map<std::string, std::map<std::string, std::vector<double>>> composition, measures;
  std::map<std::string, std::vector<double>> seconds;
};

std::vector<SelectionGroup> selection_groups(const ExperimentResults& results) {
  std::vector<SelectionGroup> groups;
  for (const RunResult& r : results.runs) {
    if (!r.selection.requested() || r.failed() || r.results.empty()) continue;
    const std::string title = r.model + " " + run_setting(r) + ", " + std::to_string(r.calibration_count) + " images";
    auto g = std::find_if(groups.begin(), groups.end(), [&](const SelectionGroup& x) { return x.title == title; });
    if (g == groups.end()) g = groups.insert(groups.end(), SelectionGroup{title, {}, {}, {}, {}, {}, {}});
    const std::string& s = r.selection.selector;
    if (std::find(g->selectors.begin(), g->selectors.end(), s) == g->selectors.end()) g->selectors.push_back(s);
    double mean = 0;
    for (const DomainResult& d : r.results) mean += d.quant_top1 / static_cast<double>(r.results.size());
    g->top1[s].push_back(mean);
    for (const auto& [source, n] : r.selection.composition) {
      if (std::find(g->sources.begin(), g->sources.end(), source) == g->sources.end()) g->sources.push_back(source);
      g->composition[s][source].push_back(static_cast<double>(n));
    }
    for (const auto& [name, value] : r.selection.measures) g->measures[s][name].push_back(value);
    g->seconds[s].push_back(r.selection.seconds);
  }
  return groups;
}
}  // namespace

// Per group: each selector's mean top-1 over the test domains (mean ± std over seeds), its difference to
// `random` (marked when larger than twice the standard deviation of the difference), the chosen sets'
// composition by source domain, the selection time and the selector's own measures.
std::string selection_markdown(const ExperimentResults& results) {
  const std::vector<SelectionGroup> groups = selection_groups(results);
  if (groups.empty()) return "";
  std::ostringstream out;
  out << std::fixed << std::setprecision(2)
      << "\n## Calibration-set selection\n\nTop-1 averaged over the test domains (%), mean ± std over seeds; "
      << "vs random: difference to the random selector, ** where it exceeds twice the standard deviation of the "
      << "difference; composition: mean chosen images per source domain of the pool.\n\n";
  for (const SelectionGroup& g : groups) {
    out << "#### " << g.title << "\n\n| selector | top-1 | vs random |";
    for (const auto& source : g.sources) out << " " << source << " |";
    out << " seconds | measures |\n|---|---:|---:|";
    for (std::size_t k = 0; k < g.sources.size(); ++k) out << "---:|";
    out << "---:|---|\n";
    const auto random = g.top1.find("random");
    for (const std::string& s : g.selectors) {
      const std::vector<double>& v = g.top1.at(s);
      out << "| " << s << " | " << 100 * mean_of(v) << " ± " << 100 * std_of(v) << " | ";
      if (random != g.top1.end() && s != "random") {
        const double diff = mean_of(v) - mean_of(random->second);
        const double sd = std::sqrt(std::pow(std_of(v), 2) + std::pow(std_of(random->second), 2));
        out << std::showpos << 100 * diff << std::noshowpos << (v.size() > 1 && std::abs(diff) > 2 * sd ? " **" : "");
      }
      out << " |";
      // A source absent from a run's composition gave it 0 images: averaged over all of the selector's runs.
      for (const auto& source : g.sources) {
        double images = 0;
        if (const auto c = g.composition.at(s).find(source); c != g.composition.at(s).end())
          for (double n : c->second) images += n;
        out << " " << std::setprecision(1) << images / static_cast<double>(v.size()) << " |";
      }
      out << " " << mean_of(g.seconds.at(s)) << " |" << std::defaultfloat << std::setprecision(4);
      if (const auto m = g.measures.find(s); m != g.measures.end())
        for (const auto& [name, values] : m->second) out << " " << name << " " << mean_of(values) << ";";
      out << std::fixed << std::setprecision(2) << " |\n";
    }
    out << "\n";
  }
  return out.str();
}

namespace {
struct GapCell {  // over repeats
  std::vector<double> quant, runtime;
  std::vector<const std::vector<bool>*> correct;
};

// McNemar's test of each cell's run against the in-domain run of its test domain, where each cell holds
// one run with per-image results.
void test_against_in_domain(GapMatrix& m, const std::vector<std::vector<GapCell>>& cells) {
  m.in_domain_p.assign(m.calibration_domains.size(), std::vector<double>(m.test_domains.size(), std::nan("")));
  for (std::size_t b = 0; b < m.test_domains.size(); ++b) {
    const auto self = std::find(m.calibration_domains.begin(), m.calibration_domains.end(), m.test_domains[b]);
    if (self == m.calibration_domains.end()) continue;
    const GapCell& in_domain = cells[static_cast<std::size_t>(self - m.calibration_domains.begin())][b];
    for (std::size_t a = 0; a < m.calibration_domains.size(); ++a) {
      const GapCell& c = cells[a][b];
      if (c.correct.size() == 1 && in_domain.correct.size() == 1 && !c.correct[0]->empty() &&
          c.correct[0]->size() == in_domain.correct[0]->size())
        m.in_domain_p[a][b] = mcnemar_exact_p(*c.correct[0], *in_domain.correct[0]);
    }
  }
}
}  // namespace

std::vector<GapMatrix> gap_matrices(const ExperimentResults& results) {
  std::set<std::int64_t> counts;
  for (const auto& r : results.runs) counts.insert(r.calibration_count);
  std::vector<GapMatrix> out;
  std::vector<std::vector<std::vector<GapCell>>> samples;  // [matrix][A][B]
  auto index_of = [](std::vector<std::string>& list, const std::string& v) {
    auto it = std::find(list.begin(), list.end(), v);
    if (it != list.end()) return static_cast<std::size_t>(it - list.begin());
    list.push_back(v);
    return list.size() - 1;
  };
  for (const auto& r : results.runs) {
    std::string setting = run_setting(r);
    if (counts.size() > 1) setting += "/n" + std::to_string(r.calibration_count);
    auto m = std::find_if(out.begin(), out.end(), [&](const GapMatrix& g) { return g.model == r.model && g.setting == setting; });
    if (m == out.end()) {
      GapMatrix g;
      g.model = r.model;
      g.setting = setting;
      out.push_back(g);
      samples.emplace_back();
      m = out.end() - 1;
    }
    auto& cells = samples[static_cast<std::size_t>(m - out.begin())];
    // A selected set is its own row: runs of different selectors are never averaged together.
    const std::size_t a = index_of(m->calibration_domains, r.calibration_domain + (r.selection.requested() ? " (" + r.selection.selector + ")" : ""));
    for (const auto& d : r.results) {
      const std::size_t b = index_of(m->test_domains, d.domain);
      m->fp32_top1.resize(m->test_domains.size(), std::nan(""));
      m->fp32_top1[b] = d.fp32_top1;
      cells.resize(m->calibration_domains.size());
      for (auto& row : cells) row.resize(m->test_domains.size());
      cells[a][b].quant.push_back(d.quant_top1);
      cells[a][b].correct.push_back(&d.correct);
      if (d.has_runtime()) cells[a][b].runtime.push_back(d.runtime_top1), m->runtime = r.exported.runtime;
    }
  }
  for (std::size_t k = 0; k < out.size(); ++k) {
    GapMatrix& m = out[k];
    for (auto& row : samples[k]) row.resize(m.test_domains.size());
    m.quant_top1.assign(m.calibration_domains.size(), std::vector<double>(m.test_domains.size(), std::nan("")));
    m.quant_std = m.runtime_top1 = m.quant_top1;
    for (std::size_t a = 0; a < m.calibration_domains.size(); ++a)
      for (std::size_t b = 0; b < m.test_domains.size(); ++b) {
        const GapCell& c = samples[k][a][b];
        if (!c.runtime.empty()) m.runtime_top1[a][b] = mean_of(c.runtime);
        if (c.quant.empty()) continue;
        m.quant_top1[a][b] = mean_of(c.quant);
        m.quant_std[a][b] = std_of(c.quant);
        m.repeats = std::max(m.repeats, static_cast<int>(c.quant.size()));
      }
    test_against_in_domain(m, samples[k]);
  }
  return out;
}

std::string gap_matrix_markdown(const GapMatrix& m) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(2);
  auto header = [&](const std::string& corner) {
    out << "| " << corner << " |";
    for (const auto& b : m.test_domains) out << " " << b << " |";
    out << "\n|---|";
    for (std::size_t j = 0; j < m.test_domains.size(); ++j) out << "---:|";
    out << "\n";
  };
  auto cell = [&](double v, bool sign) {
    if (std::isnan(v)) return std::string(" – |");
    std::ostringstream c;
    c << std::fixed << std::setprecision(2) << " " << (sign && v >= 0 ? "+" : "") << v << " |";
    return c.str();
  };
  out << "#### " << m.model << " " << m.setting << ": quantized top-1 (%)";
  if (m.repeats > 1) out << ", mean ± std over " << m.repeats << " calibration seeds";
  out << "\n\n";
  header("calibrated on \\ tested on");
  out << "| *FP32* |";
  for (double v : m.fp32_top1) out << cell(100 * v, false);
  out << "\n";
  for (std::size_t a = 0; a < m.calibration_domains.size(); ++a) {
    out << "| " << m.calibration_domains[a] << " |";
    for (std::size_t b = 0; b < m.test_domains.size(); ++b) {
      std::string c = cell(100 * m.quant_top1[a][b], false);
      if (m.repeats > 1 && !std::isnan(m.quant_std[a][b])) {
        std::ostringstream sd;
        sd << std::fixed << std::setprecision(2) << " ± " << 100 * m.quant_std[a][b] << " |";
        c = c.substr(0, c.size() - 2) + sd.str();
      }
      out << c;
    }
    out << "\n";
  }
  // One row per calibration domain, `value(a, b)` in each test domain's column.
  const auto rows = [&](const std::function<std::string(std::size_t, std::size_t)>& value) {
    header("calibrated on");
    for (std::size_t a = 0; a < m.calibration_domains.size(); ++a) {
      out << "| " << m.calibration_domains[a] << " |";
      for (std::size_t b = 0; b < m.test_domains.size(); ++b) out << value(a, b);
      out << "\n";
    }
  };
  out << "\nGap to calibrating in-domain (points; columns whose domain is also a calibration domain; * where "
         "McNemar's exact test on the same test images finds the two models' accuracies differ, p < 0.05):\n\n";
  rows([&](std::size_t a, std::size_t b) {
    const auto self = std::find(m.calibration_domains.begin(), m.calibration_domains.end(), m.test_domains[b]);
    const double in_domain = self == m.calibration_domains.end()
                                 ? std::nan("")
                                 : m.quant_top1[static_cast<std::size_t>(self - m.calibration_domains.begin())][b];
    std::string c = cell(100 * (m.quant_top1[a][b] - in_domain), true);
    if (m.in_domain_p[a][b] < 0.05) c.insert(c.size() - 2, "*");
    return c;
  });
  if (!m.runtime.empty()) {  // the runtime twin: what the exported model gives in the int8 runtime, and the gap
    out << "\nIn the int8 runtime (" << m.runtime << "), top-1 (%), and runtime − simulated (points):\n\n";
    rows([&](std::size_t a, std::size_t b) { return cell(100 * m.runtime_top1[a][b], false); });
    out << "\n";
    rows([&](std::size_t a, std::size_t b) { return cell(100 * (m.runtime_top1[a][b] - m.quant_top1[a][b]), true); });
  }
  out << "\nGap to FP32 on the test domain (points):\n\n";
  rows([&](std::size_t a, std::size_t b) { return cell(100 * (m.quant_top1[a][b] - m.fp32_top1[b]), true); });
  out << "\n";
  return out.str();
}

}  // namespace xdq
