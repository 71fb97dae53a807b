#pragma once
// An experiment file, validated: every key known, every value typed and in range, every plugin name
// loaded and its options checked against the plugin's schema. Errors carry file:line key.path.
#include <cstdint>
#include <string>
#include <vector>

#include "xdq/config/node.h"
#include "xdq/config/options.h"
#include "xdq/data/sources.h"
#include "xdq/plugin/registry.h"
#include "xdq/quant/scheme.h"

namespace xdq {

struct ModelEntry {
  std::string name;
  // Input size (input_size, or the preprocess crop), resize/interpolation/channel order from `preprocess`;
  // channels come from the first conv. Without a declared size the model is fed 28x28 with a note.
  InputShape input;
  bool size_declared = false;
  std::string size_where;            // file:line key that declared the size, for errors
  std::string path;                  // resolved against the experiment file's folder
  std::string sha256;                // when given: the model file must have this SHA-256
  bool has_preprocess = false;       // mean/std declared; else from the model's own attributes
  std::vector<double> mean, std;
};

struct TransformChoice {
  std::string name;
  int severity = 3;
  Options options;
};

// A domain: a dataset (its train split calibrates, its test split tests, unless the reference named a
// split) with a chain of transforms applied in order.
struct DomainSpec {
  std::string name;
  std::string dataset;
  bool fixed_split = false;
  Split split = Split::Train;
  std::vector<TransformChoice> transforms;
  FolderOptions folder;  // a folder:PATH dataset's options
  // A mixture of other domains (weights, normalized): images drawn from each in proportion.
  std::vector<std::pair<DomainSpec, double>> mixture;
  // A synthesized domain (data-free): images made by a Synthesizer plugin from the model being calibrated,
  // or from the models listed (names from `models:`), cached on disk.
  std::vector<PluginChoice> synthesizer;  // empty, or exactly one
  std::vector<std::string> synthesis_models;
  bool declared = false;  // in the `domains:` section (else a dataset named directly)
  std::string line;  // where a test domain was named (file:line key), for errors found when loading it
};

struct BitSetting {
  int w_bits = 8, a_bits = 8;
  std::string label() const { return "w" + std::to_string(w_bits) + "a" + std::to_string(a_bits); }
};

// One plugin of `kind`: a name, or a map {name, label, options...}; the options are validated against the
// plugin's schema, then its factory is tried. parse_plugins: a non-empty list of them, labels distinct.
PluginChoice parse_plugin(const ConfigNode& item, PluginKind kind, const PluginRegistry& registry);
std::vector<PluginChoice> parse_plugins(const ConfigNode& list, PluginKind kind, const PluginRegistry& registry);

// `device`: cpu, cuda or cuda:N, a device this LibTorch and machine have; errors name `node`'s file:line.
c10::Device parse_device(const std::string& device, const ConfigNode& node);

// "w4a8" (weight bits 2-8, activation bits 2-16); errors name the node's file:line.
BitSetting parse_bit_setting(const ConfigNode& node);

// The top-level keys: how the experiment runs.
struct ExecutionSettings {
  std::uint64_t seed = 0;
  int threads = 0;
  int jobs = 1;  // independent runs at a time; each gets threads / jobs intra-op threads
  std::string memory_format = "auto";  // of every engine: auto, contiguous, channels_last
  std::string convolution = "direct";  // of every engine: direct, winograd (xdq/exec/convolution.h)
  // Where models run: cpu, cuda or cuda:N (checked at load against the LibTorch in use). Data is read and
  // decoded on the CPU and moved to the device batch by batch.
  std::string device = "cpu";
  c10::Device torch_device() const { return c10::Device(device); }
  std::string on_error = "continue";  // a failed run is recorded and the sweep goes on; "stop": it ends the sweep
  std::string isolation = "none";     // "process": each job in a child process; one that crashes fails alone
  std::vector<std::string> plugin_paths;
};

// `calibration:`: what is calibrated on (A).
struct CalibrationSettings {
  std::vector<DomainSpec> domains;
  std::vector<std::int64_t> counts{1024};  // a sweep over calibration-set sizes
  int repeats = 1;  // calibration sets drawn with seeds seed, seed + 1, ...
  // A source holding fewer images than a count asked (a small split, unreadable files skipped) is an
  // error, unless it still holds min_images (0: the count asked, no fewer).
  std::int64_t min_images = 0;
  // A folder calibration set (or selection pool) larger than this (MiB of float32 images) is streamed:
  // memory stays a few batches whatever its size, each pass decodes the files again.
  std::int64_t stream_above_mb = 2048;
  std::int64_t batch_size = 256;
  // calibration.selector: each a point of the sweep; the set is then chosen from a pool of pool_size
  // images of the calibration domain (0: its whole split). Empty: a random draw from the domain.
  std::vector<PluginChoice> selectors;
  std::int64_t pool_size = 10000;
  // calibration.target_sample: a small unlabeled sample of the target domain for the selectors that read
  // one (train split unless the reference names one); count 0: none.
  struct TargetSample {
    DomainSpec domain;
    std::int64_t count = 0;
  } target_sample;
  int histogram_bins = 2048;  // per sign, in the activation statistics every calibrator reads
};

// `test:`: what is tested on (B).
struct TestSettings {
  std::vector<DomainSpec> domains;
  std::int64_t count = 0;  // 0: the whole test set
  // diagnostics.layer_shift_images: per-layer shift tables for the first bit setting and calibrator (0: off).
  std::int64_t layer_shift_images = 0;
  // scoring.scorers: scorer plugins computed for every run and test domain against an unlabeled sample of
  // scoring_target_count images of the domain (its train split, the same images for every run).
  std::vector<PluginChoice> scorers;
  std::int64_t scoring_target_count = 256;
};

// `quantization:`: how it is quantized.
struct QuantizationSettings {
  std::string preset = "academic";
  Scheme scheme;
  std::vector<BitSetting> bits;
  std::string weight_range = "minmax";
  bool fold_bn = true;
  std::vector<LayerOverride> overrides;
  std::vector<PluginChoice> calibrators;
  std::vector<PluginChoice> rounding;
  std::vector<PluginChoice> passes;  // GraphPass plugins run on the FP graph with each calibration set
};

// `analysis:` (`xdq analyze`): outlier-layer analysis and mixed-precision fallback.
struct AnalysisSettings {
  std::int64_t images = 1000;        // held-out images per test domain
  std::string layerwise = "both";    // what one layer's turn quantizes: weights, activation, both
  double target_drop = 0.5;          // mixed precision: accept once the top-1 drop (points) is at most this
  std::int64_t size_budget = 0;      // ... and the weights take at most this many bytes (0: no budget)
  int fallback_bits = 8;             // bits of a raised layer's weights and input activation
};

// `export:`: the runs whose quantized model is written (xdq/export/export.h) into <out>/exports/<run>,
// and, with runtime: opencv, run by OpenCV's DNN module on every test domain (runtime_top1).
struct ExportSettings {
  struct Selector {  // a run id ("all": every run), or the fields a run must match (empty: any)
    std::string id, model, bits, calibrator, rounding;
    std::string where;  // file:line key, for errors
  };
  std::vector<Selector> runs;
  std::vector<std::string> formats{"torchscript", "onnx", "encodings"};
  std::string runtime = "none";  // or opencv, onnxruntime
  bool timing = false;           // onnxruntime: time model_fp32.onnx against model.onnx
  std::int64_t timing_rounds = 20;
  bool selects(const std::string& id, const std::string& model, const std::string& bits, const std::string& calibrator,
               const std::string& rounding) const;
};

// The whole file, one member per section. Entry points (plan, run, analyze, the resolved config) and the
// pipelines they drive take it; everything below them takes the sections it reads, and reports render
// from the run alone.
struct ExperimentConfig {
  std::string file;
  std::string name;
  ExecutionSettings execution;
  DataLocations data;
  std::vector<ModelEntry> models;
  CalibrationSettings calibration;
  TestSettings test;
  QuantizationSettings quantization;
  AnalysisSettings analysis;
  ExportSettings exports;

  ConfigNode root;  // the file as read (with --set applied)

  // data.<key>: the field of `data` it sets (fashion_mnist, opencv_samples, sklearn_digits, cache).
  std::string& data_location(const std::string& key);
};

// The experiment in `root` (from `file`; relative paths start at `base_dir`) with `overrides`
// ("key.path=value") applied first, read through the key table and checked key by key; plugins are
// loaded into `registry`. xdq/experiment/load.h adds the checks that need the plan.
ExperimentConfig read_experiment(ConfigNode root, const std::string& file, const std::string& base_dir,
                                 const std::vector<std::string>& overrides, PluginRegistry& registry);

// The config as an experiment file that load_experiment (load.h) reads back to an equal config: every default
// filled in, paths absolute, model files pinned by hash; `provenance` (what the run measured about its
// inputs: threads used, calibration-set hashes) is written under `provenance:`, which loading ignores.
std::string resolved_config_yaml(const ExperimentConfig& cfg, const YAML::Node& provenance = YAML::Node());

// Every key an experiment file may hold, from the one declaration the loader and the writer use.
struct ConfigKeyDoc {
  std::string path, type, default_value, range, doc;
  bool required = false;
};
std::vector<ConfigKeyDoc> experiment_key_docs();

}  // namespace xdq
