#pragma once
// Shared by `xdq run` and `xdq analyze` (private to the experiment module): domains loaded once, models
// imported and checked against their test domains before any work starts, quantized models calibrated.
#include <cstdint>
#include <iosfwd>
#include <map>
#include <string>
#include <vector>

#include "xdq/data/sources.h"
#include "xdq/experiment/config.h"
#include "xdq/ir/import.h"
#include "xdq/plugin/registry.h"
#include "xdq/quant/ptq.h"

namespace xdq {

// Domains are loaded once per run: a calibration set is computed once and tested on every test domain.
class DomainCache {
 public:
  DomainCache(const ExperimentConfig& cfg, PluginRegistry& registry) : cfg_(cfg), registry_(registry) {}

  const Dataset& get(const DomainSpec& d, Split default_split, const InputShape& shape, std::int64_t count,
                     std::uint64_t seed);

 private:
  Dataset load(const DomainSpec& d, Split split, const InputShape& shape, std::int64_t count, std::uint64_t seed);
  Dataset mix(const DomainSpec& d, Split split, const InputShape& shape, std::int64_t count, std::uint64_t seed);

  const ExperimentConfig& cfg_;
  PluginRegistry& registry_;
  std::map<std::string, Dataset> cache_;
};

// "fashion_mnist.train", or "mix(a.train+b.train)".
std::string split_name(const DomainSpec& d, Split default_split);

struct PreparedModel {
  ImportedModel model;
  Preprocess pre;
  InputShape shape;
  std::vector<const Dataset*> tests;  // one per cfg.test_domains
};

// Imports the model, checks its overrides and test domains' labels, and loads every domain it will use.
PreparedModel prepare_model(const ExperimentConfig& cfg, const ModelEntry& entry, DomainCache& domains,
                            std::ostream& progress);

PtqSettings ptq_settings(const ExperimentConfig& cfg, const BitSetting& bits);

// The folded graph quantized with `settings`, activation ranges from `calibrator` on `images`
// (preprocessed), weight ranges from cfg.weight_range; weights not yet rounded.
QuantizedModel calibrated_model(const ExperimentConfig& cfg, const Graph& folded, const PtqSettings& settings,
                                const PluginChoice& calibrator, PluginRegistry& registry, const at::Tensor& images);

}  // namespace xdq
