// zeroq (Cai et al., "ZeroQ: A Novel Zero Shot Quantization Framework", CVPR 2020;
// amirgholami/ZeroQ classification/distill_data.py): images from Gaussian noise whose per-image BN input
// statistics are pulled to every BN layer's running mean and std, plus each image to per-channel mean 0,
// std 1; no labels. Adam lr 0.5, ReduceLROnPlateau (patience 100, min 1e-4), 500 iterations, batch 32.
// Deviation: the noise is N(0, 1) (the official code divides by the variance where it means the std).
#include "xdq/synthesis/synthesis.h"

namespace {

xdq::BnSynthesisOptions defaults() {
  xdq::BnSynthesisOptions d;
  d.statistics = xdq::BnStatistics::PerSample;
  d.iterations = 500;
  d.batch_size = 32;
  d.lr = 0.5;
  d.lr_schedule = "plateau";
  d.plateau_patience = 100;
  d.min_lr = 1e-4;
  d.input_stats_weight = 1;
  return d;
}

xdq::OptionSchema schema() { return xdq::bn_synthesis_schema(defaults()); }
xdq::Plugin* create(const xdq::Options& o) { return new xdq::BnSynthesizer(xdq::bn_synthesis_options(o, "zeroq")); }

}  // namespace

XDQ_PLUGIN(xdq::Synthesizer, "zeroq", "1.0.0", "ZeroQ: per-image BN-statistic matching from noise", schema, create)
