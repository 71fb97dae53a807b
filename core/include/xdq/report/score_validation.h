#pragma once
// Whether a label-free score predicts the top-1 a calibration set realizes (scoring:): per score, the rank
// correlations between its values and the quantized top-1 over the (run, test domain) cells of a setting,
// with bootstrap intervals, and the ranking of candidate sets by one score (`xdq rank`).
#include <map>
#include <string>
#include <vector>

#include "xdq/experiment/results.h"
#include "xdq/statistics.h"

namespace xdq {

// One score against realized top-1 over the cells of a group: a model's setting ("resnet20 w4a4/mse/nearest")
// or every model at one bit setting ("pooled w4a4"). Scores are oriented (negated when lower is better),
// so a positive correlation means the score ranks the cells as their accuracy does.
struct ScoreCorrelation {
  std::string score, group, setting;  // setting: "w4a4/mse/nearest", the group's without its model
  bool pooled = false;
  std::size_t cells = 0;
  double spearman = 0.0, kendall = 0.0;
  Interval spearman_ci, kendall_ci;  // percentile bootstrap 95 % over the cells (1 000 resamples, seed 0)
  // Within each test domain, Spearman over the calibration sets (what ranking candidates for one target
  // needs), averaged over the test domains; NaN where no domain has two sets to rank.
  double within_target = 0.0;
};
std::vector<ScoreCorrelation> validate_scores(const ExperimentResults& results);

// report.md's section: per bit setting a table of every score's correlations per model and pooled, the
// best score per group ("which predictor works when"), and a scatter plot per score (score_<name>.png in
// `files`). "" when the runs carry no scores.
std::string score_validation_markdown(const ExperimentResults& results, std::map<std::string, std::string>& files);

// `xdq rank`: per model, setting and test domain (the target), the runs' calibration sets ordered by one
// score, best first (oriented by its declaration; ties keep run order).
struct RankedSet {
  std::string run_id, calibration;  // calibration: domain, selector, size and seed of the set
  double score = 0.0;
};
struct Ranking {
  std::string model, setting, target, score;
  std::vector<RankedSet> sets;
};
// An Error naming the scores the runs carry when `score` is none of them.
std::vector<Ranking> rank_calibration_sets(const ExperimentResults& results, const std::string& score);
std::string rankings_markdown(const std::vector<Ranking>& rankings);
std::string rankings_json(const std::vector<Ranking>& rankings);

}  // namespace xdq
