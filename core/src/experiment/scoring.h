#pragma once
// scoring: label-free predictions of how well a job's calibration set serves each test domain (private to
// the experiment module). The scorer plugins are loaded once per job; the FP model runs once over the set
// and once over each domain's unlabeled sample, recording the union of what the scorers declare; scorers
// that read no quantized model are computed once per job, the others once per run.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "xdq/experiment/results.h"
#include "xdq/plugin/registry.h"
#include "xdq/quant/ptq.h"

namespace xdq {

// The scores `scorers` declare, each with its scorer's label; an Error naming both scorers when two
// declare the same score name.
std::vector<ScoreDeclaration> declared_scores(const PluginRegistry& registry, const std::vector<PluginChoice>& scorers);

class JobScoring {
 public:
  // `calibration` and `targets` are [0, 1] pixels on the CPU; `fp32` the unfolded FP graph.
  JobScoring(const PluginRegistry& registry, const std::vector<PluginChoice>& scorers, const Graph& fp32,
             const Preprocess& pre, const CalibrationImages& calibration, std::vector<at::Tensor> targets,
             std::int64_t batch_size, c10::Device device);

  // Per target, every score; scorers that read the quantized model read `quantized`.
  std::vector<std::map<std::string, double>> scores(const QuantizedModel& quantized) const;
  // Whether any scorer reads the quantized model; when none does, fp_scores() are all the scores.
  bool reads_quantized_model() const;
  const std::vector<std::map<std::string, double>>& fp_scores() const { return fp_scores_; }

 private:
  struct Loaded {
    xdq::Loaded<Scorer> plugin;
    std::string label;
    std::vector<ScoreInfo> scores;
    bool quantized = false;
  };
  // One scorer's values on target `t`, checked (one finite value per declared score) and named.
  void add_scores(const Loaded& scorer, const ScoringInputs& inputs, std::map<std::string, double>& out) const;

  std::vector<Loaded> scorers_;
  Preprocess pre_;
  std::int64_t batch_size_;
  std::vector<ScoringInputs> inputs_;                       // per target, without the quantized parts
  std::vector<std::map<std::string, double>> fp_scores_;    // per target, of the scorers reading no quantized model
};

}  // namespace xdq
