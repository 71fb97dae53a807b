#include "scoring.h"

#include <algorithm>
#include <cmath>

#include <ATen/core/grad_mode.h>

#include "xdq/error.h"
#include "xdq/exec/executor.h"
#include "xdq/experiment/diagnostics.h"
#include "xdq/select/selection.h"

namespace xdq {

namespace {
bool reads_features(const FeatureRequest& r) { return r.logits || r.penultimate || r.bn_inputs || r.layer_inputs; }

FeatureRequest merged(FeatureRequest a, const FeatureRequest& b) {
  a.logits = a.logits || b.logits;
  a.penultimate = a.penultimate || b.penultimate;
  a.bn_inputs = a.bn_inputs || b.bn_inputs;
  a.layer_inputs = a.layer_inputs || b.layer_inputs;
  a.moments = a.moments || b.moments;
  a.absmax = a.absmax || b.absmax;
  a.calibration_set = a.calibration_set || b.calibration_set;
  return a;
}
}  // namespace

std::vector<ScoreDeclaration> declared_scores(const PluginRegistry& registry, const std::vector<PluginChoice>& scorers) {
  std::vector<ScoreDeclaration> out;
  for (const PluginChoice& choice : scorers) {
    const auto scorer = registry.load<Scorer>(choice.name, choice.options);
    for (const ScoreInfo& info : scorer.call("scores", [](const Scorer& s) { return s.scores(); })) {
      for (const ScoreDeclaration& d : out)
        if (d.name == info.name)
          throw Error("scoring: scorers '" + d.scorer + "' and '" + choice.label + "' both declare a score named '" + info.name + "'");
      out.push_back({info.name, choice.label, info.higher_is_better, info.doc});
    }
  }
  return out;
}

JobScoring::JobScoring(const PluginRegistry& registry, const std::vector<PluginChoice>& scorers, const Graph& fp32,
                       const Preprocess& pre, const CalibrationImages& calibration, std::vector<at::Tensor> targets,
                       std::int64_t batch_size, c10::Device device)
    : pre_(pre), batch_size_(batch_size) {
  FeatureRequest request;  // the union; moments and absmax only cost where activation sites are asked for
  request.moments = false;
  request.calibration_set = false;
  for (const PluginChoice& choice : scorers) {
    Loaded s{registry.load<Scorer>(choice.name, choice.options), choice.label, {}, false};
    s.scores = s.plugin.call("scores", [](const Scorer& x) { return x.scores(); });
    s.quantized = s.plugin.call("reads_quantized_model", [](const Scorer& x) { return x.reads_quantized_model(); });
    const FeatureRequest wanted = s.plugin.call("features", [](const Scorer& x) { return x.features(); });
    if (reads_features(wanted)) request = merged(request, wanted);
    scorers_.push_back(std::move(s));
  }
  SelectionContext context;
  context.graph = &fp32;
  context.preprocess = pre;
  context.pool = calibration;
  context.batch_size = batch_size;
  context.device = device;
  // No pass at all when no scorer reads FP features (clipping alone reads the quantized model's pass).
  const bool any = reads_features(request);
  const PoolFeatures set = any && request.calibration_set ? pool_features(context, request) : PoolFeatures();
  for (at::Tensor& target : targets) {
    ScoringInputs in;
    in.calibration = calibration;
    in.calibration_features = set;
    if (any) in.target_features = image_features(context, target, request);
    in.target = std::move(target);
    inputs_.push_back(std::move(in));
  }
  fp_scores_.resize(inputs_.size());
  for (std::size_t t = 0; t < inputs_.size(); ++t)
    for (const Loaded& s : scorers_)
      if (!s.quantized) add_scores(s, inputs_[t], fp_scores_[t]);
}

void JobScoring::add_scores(const Loaded& scorer, const ScoringInputs& inputs, std::map<std::string, double>& out) const {
  const std::vector<double> values = scorer.plugin.call("score", [&](const Scorer& s) { return s.score(inputs); });
  const std::string who = "scorer '" + scorer.label + "' (" + scorer.plugin.record().path + ")";
  if (values.size() != scorer.scores.size())
    throw Error(who + " returned " + std::to_string(values.size()) + " values for its " + std::to_string(scorer.scores.size()) + " scores");
  for (std::size_t k = 0; k < values.size(); ++k) {
    if (!std::isfinite(values[k])) throw Error(who + ": score '" + scorer.scores[k].name + "' is not a finite number");
    out[scorer.scores[k].name] = values[k];
  }
}

bool JobScoring::reads_quantized_model() const {
  return std::any_of(scorers_.begin(), scorers_.end(), [](const Loaded& s) { return s.quantized; });
}

std::vector<std::map<std::string, double>> JobScoring::scores(const QuantizedModel& quantized) const {
  std::vector<std::map<std::string, double>> out = fp_scores_;
  if (!reads_quantized_model()) return out;
  const at::NoGradGuard no_grad;
  const Executor exec = quantized.executor();
  for (std::size_t t = 0; t < inputs_.size(); ++t) {
    ScoringInputs in = inputs_[t];
    const at::Tensor images = pre_.apply(in.target);
    std::vector<at::Tensor> logits;
    CalibrationImages(images).for_each_batch(batch_size_, [&](const at::Tensor& batch, std::int64_t) {
      logits.push_back(exec.forward(batch).cpu());
    });
    in.quantized_target_logits = at::cat(logits);
    in.target_clipped = clipped_fractions(quantized, images, batch_size_);
    for (const Loaded& s : scorers_)
      if (s.quantized) add_scores(s, in, out[t]);
  }
  return out;
}

}  // namespace xdq
