// quantized_outputs: how far the run's quantized model strays from the FP model on the unlabeled target
// sample, from their logits (in double):
//   agreement   share of target images where the two models' top-1 classes are the same;
//   logit_kl    mean KL(p_FP || p_Q) of the softmax outputs (nats);
//   logit_sqnr  10 log10(Σ z_FP² / Σ (z_FP − z_Q)²) over every logit (dB; +inf written as 1e9 when equal).
#include <cmath>

#include "xdq/error.h"
#include "xdq/plugin/interfaces.h"

namespace {

class QuantizedOutputs : public xdq::Scorer {
 public:
  std::vector<xdq::ScoreInfo> scores() const override {
    return {{"agreement", true, "share of target images where quantized and FP top-1 agree"},
            {"logit_kl", false, "mean KL(softmax FP || softmax quantized) on the target"},
            {"logit_sqnr", true, "signal-to-quantization-noise ratio of the target's logits (dB)"}};
  }
  xdq::FeatureRequest features() const override {
    xdq::FeatureRequest r;
    r.logits = true;
    r.calibration_set = false;  // the FP logits of the target sample only
    return r;
  }
  bool reads_quantized_model() const override { return true; }
  std::vector<double> score(const xdq::ScoringInputs& in) const override {
    const at::Tensor fp = in.target_features.logits.to(at::kDouble), q = in.quantized_target_logits.to(at::kDouble);
    if (!q.defined() || !fp.sizes().equals(q.sizes()) || fp.size(0) == 0)
      throw xdq::Error("quantized_outputs: the FP and quantized logits of the target sample do not match");
    const double agreement = fp.argmax(1).eq(q.argmax(1)).to(at::kDouble).mean().item<double>();
    const at::Tensor log_p = at::log_softmax(fp, 1), log_q = at::log_softmax(q, 1);
    const double kl = (log_p.exp() * (log_p - log_q)).sum(1).mean().item<double>();
    const double noise = (fp - q).pow(2).sum().item<double>();
    const double sqnr = noise == 0 ? 1e9 : 10 * std::log10(fp.pow(2).sum().item<double>() / noise);
    return {agreement, kl, sqnr};
  }
};

xdq::OptionSchema schema() { return {}; }
xdq::Plugin* create(const xdq::Options&) { return new QuantizedOutputs(); }

}  // namespace

XDQ_PLUGIN(xdq::Scorer, "quantized_outputs", "1.0.0", "top-1 agreement, KL and SQNR of quantized vs FP logits on the target", schema, create)
