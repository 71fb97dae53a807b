#pragma once
// One abstract interface per plugin kind. No data members; contexts are plain structs owned by the core.
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "xdq/data/dataset.h"
#include "xdq/ir/graph.h"
#include "xdq/plugin/plugin.h"
#include "xdq/quant/calibration_images.h"
#include "xdq/quant/model_view.h"
#include "xdq/quant/quantizer.h"
#include "xdq/quant/statistics.h"

namespace xdq {

// ---- Calibrator: activation ranges ---------------------------------------------------------------------
// A calibrator reads one of three things (input()):
//   Statistics (the default): range_from_statistics, from a histogram and per-batch summaries of each
//     activation. The core collects them once per model and calibration set for every calibrator and bit
//     width, and caches them on disk, so trying another calibrator does not run the model again.
//   Activations: make_observer, an observer per quantized activation that sees every raw calibration
//     batch (for what no summary holds).
//   Graph: range_from_graph, no data at all (data-free: the BN-folded graph's statistics); `input` is the
//     range of the model input (normalized [0, 1] pixels).
class BOOST_SYMBOL_VISIBLE RangeObserver {
 public:
  virtual ~RangeObserver();
  virtual void observe(const at::Tensor& x) = 0;
  virtual Range range() const = 0;
};

class BOOST_SYMBOL_VISIBLE Calibrator : public Plugin {
 public:
  enum class Input { Statistics, Activations, Graph };
  ~Calibrator() override;
  virtual Input input() const { return Input::Statistics; }
  virtual Range range_from_statistics(const ActivationStatistics& statistics, const QuantSpec& spec) const;
  virtual std::unique_ptr<RangeObserver> make_observer(const QuantSpec& spec) const;
  virtual Range range_from_graph(const Graph& folded, int value, const Range& input) const;
  // Whether its ranges suit every Grid, not only the uniform one: on the log-sqrt2 and twin uniform grids the
  // range's max alone sets the scale, so a calibrator that reads extremes or measures errors through
  // ScalarGrid does; one fitted to the uniform grid's step is refused for a preset that places them.
  virtual bool handles_any_grid() const { return false; }
};

// ---- WeightOptimizer: the rounding of weights (nearest, AdaRound, block reconstruction) ---------------
class BOOST_SYMBOL_VISIBLE WeightOptimizer : public Plugin {
 public:
  ~WeightOptimizer() override;
  virtual void optimize(RoundingContext& context) const = 0;
};

// ---- Synthesizer: calibration images made from the model itself (data-free) ----------------------------
// A model to synthesize from: its unfolded graph (BatchNorm statistics intact).
struct SynthesisModel {
  std::string name;
  const Graph* graph = nullptr;
  Preprocess preprocess;
  std::vector<std::int64_t> input_shape;  // [C, H, W] it reads
};

struct SynthesisContext {
  // The model being calibrated, or the models a domain declares (MixMix's feature mixing): unfolded
  // graphs, BatchNorm statistics intact.
  std::vector<SynthesisModel> models;
  std::vector<std::int64_t> input_shape;  // [C, H, W]; images are produced as pixels in [0, 1]
  std::int64_t count = 0;
  std::uint64_t seed = 0;
  std::ostream* progress = nullptr;       // progress lines (may be null)
  c10::Device device{c10::kCPU};          // where the models' tensors are: work there, return images on the CPU
};

class BOOST_SYMBOL_VISIBLE Synthesizer : public Plugin {
 public:
  ~Synthesizer() override;
  virtual Dataset synthesize(const SynthesisContext& context) const = 0;
};

// ---- GraphPass: a rewrite of the graph ----------------------------------------------------------------
// BeforeQuantization passes rewrite the FP graph, BatchNorm still unfolded (CLE, bias absorption, AdaBN).
// AfterRounding passes see the BN-folded graph of a quantized model once its weights are rounded, and may
// change its biases (empirical bias correction).
enum class PassStage { BeforeQuantization, AfterRounding };

struct PassContext {
  CalibrationImages calibration;  // preprocessed calibration images (on the CPU), read batch by batch; empty when data-free
  c10::Device device{c10::kCPU};  // where the graph's tensors are; an Executor moves its inputs there
  std::uint64_t seed = 0;
  std::ostream* log = nullptr;  // where a pass reports what it changed and which layers it skipped, and why
  int a_bits = 8;                // the run's activation bits
  // AfterRounding only: the quantized model's layers (rounded weights) and activation quantizers.
  const std::vector<QuantizedLayer>* layers = nullptr;
  const std::vector<ActivationQuantizer>* activations = nullptr;
};

class BOOST_SYMBOL_VISIBLE GraphPass : public Plugin {
 public:
  ~GraphPass() override;
  virtual PassStage stage() const { return PassStage::BeforeQuantization; }
  virtual void run(Graph& graph, const PassContext& context) const = 0;
};

// ---- DomainTransform: a domain shift applied to [0, 1] images ------------------------------------------
class BOOST_SYMBOL_VISIBLE DomainTransform : public Plugin {
 public:
  ~DomainTransform() override;
  virtual at::Tensor apply(const at::Tensor& images, int severity, std::uint64_t seed) const = 0;
};

// ---- Selector: which images of a candidate pool calibrate ---------------------------------------------
// The pool is read batch by batch, as calibration sets are (it may come from several domains, or be
// streamed from a large folder; labels are not given: selection is unsupervised). A selector reads the FP
// model through select/selection.h (pool_features), and answers with row numbers of the pool.
struct SelectionContext {
  const Graph* graph = nullptr;  // the FP model, BatchNorm unfolded (running statistics intact)
  Preprocess preprocess;         // pixels -> the model's input
  CalibrationImages pool;        // [0, 1] pixels [N, C, H, W] on the CPU; pool.size() rows to choose from
  at::Tensor target;  // a small unlabeled sample of the target domain (pixels, CPU), or undefined
  std::int64_t count = 0;
  std::uint64_t seed = 0;
  std::int64_t batch_size = 256;
  c10::Device device{c10::kCPU};  // where the graph's tensors are
  std::ostream* progress = nullptr;
};

struct Selection {
  std::vector<std::int64_t> indices;       // `count` distinct pool rows
  std::map<std::string, double> measures;  // the method's objective on the chosen set (reported with the run)
  std::vector<double> trace;               // the objective after each improving step, where the method has one
};

class BOOST_SYMBOL_VISIBLE Selector : public Plugin {
 public:
  ~Selector() override;
  virtual int passes() const { return 1; }  // forward passes over the pool a selection makes (0: reads no image)
  virtual bool needs_target() const { return false; }
  virtual Selection select(const SelectionContext& context) const = 0;
};

// ---- Scorer: how well a calibration set will serve a target domain, guessed without labels ------------
// What an FP forward pass records per image (a selector asks select/selection.h's pool_features for it; a
// scorer declares it, and the core gathers what all scorers of a run declare in one pass).
struct FeatureRequest {
  bool logits = false;
  bool penultimate = false;   // the last layer's input (spatial mean when 4-D)
  bool bn_inputs = false;     // at every BatchNorm input
  bool layer_inputs = false;  // at every conv/linear input (the activations calibration quantizes)
  // What is summarized at those sites (each costs a pass over every activation).
  bool moments = true;  // E[x] and E[x²]
  bool absmax = false;  // max |x|
  // A scorer's request: whether it reads the calibration set's features too, or the target sample's only.
  bool calibration_set = true;
};

// One activation site over N images: per image and channel, E[x] and E[x²] over the image's positions,
// and max |x| ([N, C] each, float32, CPU; undefined when not requested).
struct SiteFeatures {
  std::string name;
  at::Tensor mean, square, absmax;
  at::Tensor running_mean, running_var;  // BatchNorm sites: the layer's running statistics [C]
};

struct PoolFeatures {
  at::Tensor logits;       // [N, classes]
  at::Tensor penultimate;  // [N, F]
  std::vector<SiteFeatures> bn_inputs, layer_inputs;
};

// A score's meaning for the reports that validate it against realized accuracy.
struct ScoreInfo {
  std::string name;              // unique among the experiment's scorers (results.json `scores`)
  bool higher_is_better = true;  // the direction in which the score predicts better accuracy
  std::string doc;
};

// What the core hands every scorer of a run: one FP pass over the calibration set and one over an unlabeled
// target sample (each recording the union of the scorers' features()), and, for scorers that read the
// run's quantized model, its logits on the target sample and the share of the target's values outside each
// activation quantizer's range.
struct ScoringInputs {
  CalibrationImages calibration;  // the run's calibration set: [0, 1] pixels on the CPU, read batch by batch
  at::Tensor target;              // the target sample: [0, 1] pixels [n, C, H, W] on the CPU
  PoolFeatures calibration_features, target_features;
  at::Tensor quantized_target_logits;  // [n, classes]; undefined unless reads_quantized_model()
  std::vector<std::pair<std::string, double>> target_clipped;  // per activation quantizer, in model order
};

class BOOST_SYMBOL_VISIBLE Scorer : public Plugin {
 public:
  ~Scorer() override;
  virtual std::vector<ScoreInfo> scores() const = 0;  // what score() returns, in that order
  virtual FeatureRequest features() const { return {}; }
  virtual bool reads_quantized_model() const { return false; }
  virtual std::vector<double> score(const ScoringInputs& inputs) const = 0;  // one value per scores() entry
};

template <> struct PluginKindOf<Calibrator> { static constexpr PluginKind value = PluginKind::Calibrator; };
template <> struct PluginKindOf<WeightOptimizer> { static constexpr PluginKind value = PluginKind::WeightOptimizer; };
template <> struct PluginKindOf<Synthesizer> { static constexpr PluginKind value = PluginKind::Synthesizer; };
template <> struct PluginKindOf<GraphPass> { static constexpr PluginKind value = PluginKind::GraphPass; };
template <> struct PluginKindOf<DomainTransform> { static constexpr PluginKind value = PluginKind::DomainTransform; };
template <> struct PluginKindOf<Selector> { static constexpr PluginKind value = PluginKind::Selector; };
template <> struct PluginKindOf<Scorer> { static constexpr PluginKind value = PluginKind::Scorer; };

}  // namespace xdq
