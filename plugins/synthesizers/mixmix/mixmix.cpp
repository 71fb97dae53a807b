// mixmix (Li et al., "MixMix: All You Need for Data-Free Compression Are Feature and Data Mixing",
// ICCV 2021; no official code): DeepInversion's loss (batch BN statistics, CE, image priors, jitter,
// flips, clamping, same defaults) with
//   feature mixing: the loss averaged over every model the domain lists (different architectures), so
//                   one synthesized set serves them all;
//   data mixing:    each step a resized copy of another image of the batch is pasted into a random box
//                   (side 30-70 % of the image) and the CE target mixed by the box's area.
// Both switchable for ablations. The box size range is this implementation's choice (the paper gives
// none).
#include "xdq/synthesis/synthesis.h"

namespace {

xdq::BnSynthesisOptions defaults() {
  xdq::BnSynthesisOptions d = xdq::deepinversion_defaults();
  d.data_mixing = true;
  d.feature_mixing = true;
  return d;
}

xdq::OptionSchema schema() { return xdq::bn_synthesis_schema(defaults()); }
xdq::Plugin* create(const xdq::Options& o) { return new xdq::BnSynthesizer(xdq::bn_synthesis_options(o, "mixmix")); }

}  // namespace

XDQ_PLUGIN(xdq::Synthesizer, "mixmix", "1.0.0", "MixMix: feature mixing over several models and data mixing", schema,
           create)
