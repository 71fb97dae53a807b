// deepinversion (Yin et al., "Dreaming to Distill: Data-free Knowledge Transfer via DeepInversion",
// CVPR 2020; NVlabs/DeepInversion imagenet_inversion.py): L = CE(f(x), y) on random target labels
// + r_f·Σ_l w_l(‖σ²_l − var_l‖₂ + ‖μ_l − mean_l‖₂) (batch statistics, w = 10 for the first BN)
// + tv_l2·TV₂(x) + l2·‖x‖₂; random jitter (30 px at 224 = 0.134 of the side) and flips every step,
// pixels clamped to the valid range, Adam lr 0.25 betas (0.5, 0.9), cosine rate after a 100-step warm-up,
// 2 000 iterations at full resolution (setting 1). Batch 64 here (152 per GPU in the paper).
#include "xdq/synthesis/synthesis.h"

namespace {

xdq::BnSynthesisOptions defaults() { return xdq::deepinversion_defaults(); }

xdq::OptionSchema schema() { return xdq::bn_synthesis_schema(defaults()); }
xdq::Plugin* create(const xdq::Options& o) { return new xdq::BnSynthesizer(xdq::bn_synthesis_options(o, "deepinversion")); }

}  // namespace

XDQ_PLUGIN(xdq::Synthesizer, "deepinversion", "1.0.0", "DeepInversion: batch BN statistics, CE and image priors",
           schema, create)
