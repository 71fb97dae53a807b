#pragma once
// Calibration and test domains of an experiment (private to the experiment module): datasets with their
// transform plugins, mixtures, synthesized sets kept on disk, folders streamed from their files.
#include <cstdint>
#include <iosfwd>
#include <map>
#include <string>
#include <vector>

#include "xdq/data/sources.h"
#include "xdq/data/test_images.h"
#include "xdq/experiment/config.h"
#include "xdq/ir/import.h"
#include "xdq/plugin/registry.h"
#include "xdq/quant/calibration_images.h"

namespace xdq {

// A job's calibration set before preprocessing: [0, 1] images in memory (`memory`, the Dataset) or
// streamed from a folder's files, decoded batch by batch (no Dataset; `images` alone).
struct CalibrationSet {
  const Dataset* memory = nullptr;
  CalibrationImages images;
  // What the provenance records: the images' hash (CalibrationImages::content_hash), the same whether the
  // set was held in memory or streamed.
  std::string content_hash() const;
};

// Domains are loaded once per run: a calibration set is computed once and tested on every test domain.
// Synthesized domains are made from `model` (the model being calibrated) or from the models they list,
// and kept on disk (data.cache) keyed by model hashes, plugin, options, count, seed and shape.
class DomainCache {
 public:
  // `file` names the experiment in errors; `models` are those a synthesized domain may name.
  DomainCache(std::string file, const ExecutionSettings& execution, const DataLocations& data,
              const CalibrationSettings& calibration, const std::vector<ModelEntry>& models, PluginRegistry& registry,
              std::ostream& progress)
      : file_(std::move(file)), execution_(execution), data_(data), calibration_(calibration), entries_(models),
        registry_(registry), progress_(progress) {}

  const Dataset& get(const DomainSpec& d, Split default_split, const InputShape& shape, std::int64_t count,
                     std::uint64_t seed, const ModelEntry* model = nullptr);
  // A calibration set (train split unless the domain names one) of `count` images; a source holding
  // fewer is an Error unless calibration.min_images allows it (then a warning says how many are used).
  const Dataset& calibration_set(const DomainSpec& d, const InputShape& shape, std::int64_t count, std::uint64_t seed,
                                 const ModelEntry* model);
  // The same set, streamed when the domain is a folder of image files that skips none and the set exceeds
  // calibration.stream_above_mb (it then costs a few batches of memory whatever its size, and each pass
  // decodes it again), else in memory (calibration_set()).
  CalibrationSet calibration_images(const DomainSpec& d, const InputShape& shape, std::int64_t count,
                                    std::uint64_t seed, const ModelEntry* model);
  // A selector's pool: `count` images (0: the whole train split) of a real domain, streamed as
  // calibration_images() streams; a pool is what its source holds (no calibration.count check).
  CalibrationSet pool_images(const DomainSpec& d, const InputShape& shape, std::int64_t count, std::uint64_t seed,
                             const ModelEntry* model);
  // A test domain: a folder streamed from its files, any other domain in memory (get()).
  TestImages test_images(const DomainSpec& d, const InputShape& shape, std::int64_t count, std::uint64_t seed);
  // Where a synthesized domain's images were read from or written to ("" for other domains).
  std::string cache_file(const DomainSpec& d, const InputShape& shape, std::int64_t count, std::uint64_t seed,
                         const ModelEntry* model);

 private:
  // `count` images of the folder domain's `split`, decoded when read.
  TestImages folder_images(const DomainSpec& d, Split split, const InputShape& shape, std::int64_t count,
                           std::uint64_t seed) const;
  // calibration_images (checked against calibration.count and min_images) or pool_images (not checked).
  CalibrationSet train_images(const DomainSpec& d, const InputShape& shape, std::int64_t count, std::uint64_t seed,
                              const ModelEntry* model, bool check_count);
  // The calibration.count / calibration.min_images check on a set of `available` images.
  void check_calibration_count(const DomainSpec& d, std::int64_t available, std::int64_t count) const;
  Dataset load(const DomainSpec& d, Split split, const InputShape& shape, std::int64_t count, std::uint64_t seed);
  // The domain's transform plugins, loaded once for a set (a streamed set applies them batch by batch).
  std::vector<Loaded<DomainTransform>> transforms(const DomainSpec& d) const;
  static at::Tensor transformed(const DomainSpec& d, const std::vector<Loaded<DomainTransform>>& transforms,
                                at::Tensor images, std::uint64_t seed, std::int64_t first);
  Dataset mix(const DomainSpec& d, Split split, const InputShape& shape, std::int64_t count, std::uint64_t seed,
              const ModelEntry* model);
  Dataset synthesize(const DomainSpec& d, const InputShape& shape, std::int64_t count, std::uint64_t seed,
                     const ModelEntry* model);
  std::vector<const ModelEntry*> synthesis_models(const DomainSpec& d, const ModelEntry* model) const;
  const ImportedModel& imported(const ModelEntry& entry);

  const std::string file_;
  const ExecutionSettings& execution_;
  const DataLocations& data_;
  const CalibrationSettings& calibration_;
  const std::vector<ModelEntry>& entries_;
  PluginRegistry& registry_;
  std::ostream& progress_;
  std::map<std::string, Dataset> cache_;
  std::map<std::string, ImportedModel> models_;  // by path
};

// Where synthesized sets and calibration statistics are kept: data.cache, else $XDQ_CACHE_DIR, else
// ~/.cache/xdq.
std::string cache_directory(const DataLocations& data);

// "fashion_mnist.train", "mix(a.train+b.train)", or "synthesized:zeroq".
std::string split_name(const DomainSpec& d, Split default_split);

}  // namespace xdq
