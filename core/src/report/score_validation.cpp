#include "xdq/report/score_validation.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "xdq/error.h"
#include "xdq/report/png.h"
#include "xdq/report/results_tables.h"

namespace xdq {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The cells of one group: per cell its test domain, realized top-1 and every score.
struct Group {
  std::string name, setting;
  bool pooled = false;
  std::vector<const DomainResult*> cells;
  std::vector<std::string> targets;  // per cell: its model and test domain (one column of a gap matrix)
};

std::vector<Group> groups_of(const ExperimentResults& results) {
  std::vector<Group> out;
  const auto add = [&](const std::string& name, const std::string& setting, bool pooled, const DomainResult* d,
                       const std::string& target) {
    auto g = std::find_if(out.begin(), out.end(), [&](const Group& x) { return x.name == name; });
    if (g == out.end()) g = out.insert(out.end(), Group{name, setting, pooled, {}, {}});
    g->cells.push_back(d);
    g->targets.push_back(target);
  };
  for (const RunResult& r : results.runs)
    for (const DomainResult& d : r.results)
      if (!r.failed() && !d.scores.empty()) add(r.model + " " + run_setting(r), run_setting(r), false, &d, r.model + "/" + d.domain);
  const std::size_t per_model = out.size();
  for (std::size_t i = 0; i < per_model; ++i) {  // pooled groups after the per-model ones, one per setting
    const Group model = out[i];
    for (std::size_t k = 0; k < model.cells.size(); ++k)
      add("pooled " + model.setting, model.setting, true, model.cells[k], model.targets[k]);
  }
  // A pooled group of one model says nothing more than that model's group.
  out.erase(std::remove_if(out.begin(), out.end(), [&](const Group& g) {
              if (!g.pooled) return false;
              return std::count_if(out.begin(), out.end(), [&](const Group& m) { return !m.pooled && m.setting == g.setting; }) < 2;
            }),
            out.end());
  return out;
}

double mean_within_target(const Group& g, const std::string& score, double sign) {
  std::vector<std::string> targets;
  for (const std::string& t : g.targets)
    if (std::find(targets.begin(), targets.end(), t) == targets.end()) targets.push_back(t);
  double sum = 0;
  int counted = 0;
  for (const std::string& target : targets) {
    std::vector<double> x, y;
    for (std::size_t k = 0; k < g.cells.size(); ++k)
      if (g.targets[k] == target && g.cells[k]->scores.count(score))
        x.push_back(sign * g.cells[k]->scores.at(score)), y.push_back(g.cells[k]->quant_top1);
    if (const double rho = x.size() > 1 ? spearman(x, y) : kNaN; !std::isnan(rho)) sum += rho, ++counted;
  }
  return counted ? sum / counted : kNaN;
}

std::string fixed(double v, int digits = 2) {
  if (std::isnan(v)) return "–";
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

std::string with_interval(double v, const Interval& ci) {
  return fixed(v) + " [" + fixed(ci.low) + ", " + fixed(ci.high) + "]";
}

}  // namespace

std::vector<ScoreCorrelation> validate_scores(const ExperimentResults& results) {
  std::vector<ScoreCorrelation> out;
  const std::vector<Group> groups = groups_of(results);
  for (const ScoreDeclaration& s : results.scores) {
    const double sign = s.higher_is_better ? 1.0 : -1.0;
    for (const Group& g : groups) {
      std::vector<double> x, y;
      for (const DomainResult* d : g.cells)
        if (d->scores.count(s.name)) x.push_back(sign * d->scores.at(s.name)), y.push_back(d->quant_top1);
      ScoreCorrelation c;
      c.score = s.name;
      c.group = g.name;
      c.setting = g.setting;
      c.pooled = g.pooled;
      c.cells = x.size();
      c.spearman = spearman(x, y);
      c.kendall = kendall_tau_b(x, y);
      c.spearman_ci = bootstrap_correlation_interval(x, y, spearman);
      c.kendall_ci = bootstrap_correlation_interval(x, y, kendall_tau_b);
      c.within_target = mean_within_target(g, s.name, sign);
      out.push_back(c);
    }
  }
  return out;
}

namespace {

// One scatter plot per score: its value against realized top-1 (%), a series per per-model group.
void scatter_plots(const ExperimentResults& results, std::map<std::string, std::string>& files, std::ostringstream& md) {
  if (!image_output_available()) return;
  const std::vector<Group> groups = groups_of(results);
  md << "\nScatter plots (score against quantized top-1 %, one colour per model and setting):";
  for (const ScoreDeclaration& s : results.scores) {
    std::vector<std::string> names;
    std::vector<std::vector<std::pair<double, double>>> series;
    for (const Group& g : groups) {
      if (g.pooled) continue;
      names.push_back(g.name);
      auto& points = series.emplace_back();
      for (const DomainResult* d : g.cells)
        if (d->scores.count(s.name)) points.emplace_back(d->scores.at(s.name), 100.0 * d->quant_top1);
    }
    const std::string file = "score_" + s.name + ".png";
    files[file] = render_curves_png(s.name + (s.higher_is_better ? " (higher predicts better)" : " (lower predicts better)") +
                                        " vs quantized top-1 (%)", names, series, false, false);
    md << " [" << s.name << "](" << file << ")";
  }
  md << "\n";
}

}  // namespace

std::string score_validation_markdown(const ExperimentResults& results, std::map<std::string, std::string>& files) {
  if (results.scores.empty()) return "";
  const std::vector<ScoreCorrelation> all = validate_scores(results);
  if (all.empty()) return "";
  std::ostringstream md;
  md << "\n## Which calibration set will work: label-free scores against realized top-1\n\n"
     << "Per score (oriented: negated where lower predicts better), Spearman's ρ with a bootstrap 95 % interval over "
     << "the (run, test domain) cells of each model and setting, and pooled over the models; τ is Kendall's tau-b of "
     << "the pooled cells; *within* is ρ over the calibration sets of one model and test domain, averaged over those "
     << "(ranking candidate sets for one target).\n";
  std::vector<std::string> settings;
  for (const ScoreCorrelation& c : all)
    if (std::find(settings.begin(), settings.end(), c.setting) == settings.end()) settings.push_back(c.setting);
  for (const std::string& setting : settings) {
    std::vector<std::string> columns;
    for (const ScoreCorrelation& c : all)
      if (c.setting == setting && std::find(columns.begin(), columns.end(), c.group) == columns.end())
        columns.push_back(c.group);
    md << "\n#### " << setting << "\n\n| score |";
    for (const std::string& g : columns) md << " " << g.substr(0, g.rfind(' ')) << " ρ | within |";
    md << " τ (last column) |\n|---|";
    for (std::size_t k = 0; k < columns.size(); ++k) md << "---|---|";
    md << "---|\n";
    for (const ScoreDeclaration& s : results.scores) {
      md << "| " << s.name << " |";
      const ScoreCorrelation* last = nullptr;
      for (const std::string& g : columns)
        for (const ScoreCorrelation& c : all)
          if (c.score == s.name && c.group == g) {
            md << " " << with_interval(c.spearman, c.spearman_ci) << " | " << fixed(c.within_target) << " |";
            last = &c;
          }
      md << " " << (last ? with_interval(last->kendall, last->kendall_ci) : "–") << " |\n";
    }
  }
  md << "\nWhich predictor works when (the score with the highest ρ, and the highest *within*, per group):\n\n"
     << "| group | cells | best ρ | best within |\n|---|---|---|---|\n";
  std::vector<std::string> groups;
  for (const ScoreCorrelation& c : all)
    if (std::find(groups.begin(), groups.end(), c.group) == groups.end()) groups.push_back(c.group);
  for (const std::string& g : groups) {
    const ScoreCorrelation *rho = nullptr, *within = nullptr;
    for (const ScoreCorrelation& c : all) {
      if (c.group != g) continue;
      if (!std::isnan(c.spearman) && (!rho || c.spearman > rho->spearman)) rho = &c;
      if (!std::isnan(c.within_target) && (!within || c.within_target > within->within_target)) within = &c;
    }
    md << "| " << g << " | " << (rho ? rho->cells : 0) << " | " << (rho ? rho->score + " " + with_interval(rho->spearman, rho->spearman_ci) : "–")
       << " | " << (within ? within->score + " " + fixed(within->within_target) : "–") << " |\n";
  }
  scatter_plots(results, files, md);
  return md.str();
}

std::vector<Ranking> rank_calibration_sets(const ExperimentResults& results, const std::string& score) {
  const auto declared = std::find_if(results.scores.begin(), results.scores.end(), [&](const ScoreDeclaration& d) { return d.name == score; });
  if (declared == results.scores.end()) {
    std::string names;
    for (const ScoreDeclaration& d : results.scores) names += (names.empty() ? "" : ", ") + d.name;
    throw Error("no score '" + score + "' in these results (they carry: " + (names.empty() ? "none" : names) + ")");
  }
  const double sign = declared->higher_is_better ? 1.0 : -1.0;
  std::vector<Ranking> out;
  for (const RunResult& r : results.runs) {
    if (r.failed()) continue;
    for (const DomainResult& d : r.results) {
      if (!d.scores.count(score)) continue;
      auto ranking = std::find_if(out.begin(), out.end(), [&](const Ranking& k) {
        return k.model == r.model && k.setting == run_setting(r) && k.target == d.domain;
      });
      if (ranking == out.end()) ranking = out.insert(out.end(), Ranking{r.model, run_setting(r), d.domain, score, {}});
      std::string set = r.calibration_domain;
      if (r.selection.requested()) set += " chosen by " + r.selection.selector;
      set += ", " + std::to_string(r.calibration_count) + " images, seed " + std::to_string(r.calibration_seed);
      ranking->sets.push_back({r.id, set, d.scores.at(score)});
    }
  }
  for (Ranking& k : out)
    std::stable_sort(k.sets.begin(), k.sets.end(), [&](const RankedSet& a, const RankedSet& b) { return sign * a.score > sign * b.score; });
  return out;
}

std::string rankings_markdown(const std::vector<Ranking>& rankings) {
  std::ostringstream md;
  for (const Ranking& k : rankings) {
    md << "#### " << k.model << " " << k.setting << ", target " << k.target << ": calibration sets by " << k.score << "\n\n"
       << "| rank | calibration set | " << k.score << " | run |\n|---|---|---|---|\n";
    for (std::size_t i = 0; i < k.sets.size(); ++i)
      md << "| " << i + 1 << " | " << k.sets[i].calibration << " | " << std::setprecision(6) << k.sets[i].score << " | `"
         << k.sets[i].run_id << "` |\n";
    md << "\n";
  }
  return md.str();
}

std::string rankings_json(const std::vector<Ranking>& rankings) {
  nlohmann::ordered_json root = nlohmann::ordered_json::array();
  for (const Ranking& k : rankings) {
    nlohmann::ordered_json sets = nlohmann::ordered_json::array();
    for (const RankedSet& s : k.sets) sets.push_back({{"run", s.run_id}, {"calibration", s.calibration}, {"score", s.score}});
    root.push_back({{"model", k.model}, {"setting", k.setting}, {"target", k.target}, {"score", k.score}, {"sets", sets}});
  }
  return root.dump(2) + "\n";
}

}  // namespace xdq
