#pragma once
// Job shards (private to the experiment module): each finished job of a sweep or an analysis is kept in
// the output folder, so an interrupted or failing one keeps what it finished, is resumed where it
// stopped, and can be run one job per process (cluster arrays) and merged.
//   DIR/<kind>/config.yaml          the resolved config every shard belongs to (without provenance)
//   DIR/<kind>/<id>/shard.json      the job's data; files it refers to lie beside it
//   DIR/<kind>/<id>.phases.json     a job's finished phases while it runs (analysis jobs)
// <kind> is `jobs` for `xdq run` and `analysis_jobs` for `xdq analyze`, so both can share one folder.
// A shard folder is written under a temporary name and renamed when complete: it exists whole or not.
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "pipeline.h"
#include "xdq/experiment/config.h"
#include "xdq/experiment/plan.h"
#include "xdq/experiment/results.h"
#include "xdq/files.h"

namespace xdq {

class ShardFolder {
 public:
  // `out_dir` empty: no shards. Refuses (Error) a folder whose shards belong to another config than the
  // one `resolved_config` returns (resolved_config_yaml without provenance; called only with a folder).
  using ConfigText = std::function<std::string()>;
  ShardFolder(const ConfigText& resolved_config, const std::string& out_dir, const std::string& kind);

  bool enabled() const { return !dir_.empty(); }
  bool done(const std::string& id) const;
  // A job's shard locked while the job runs alone (--job K): a second process on it is refused. Null
  // when there are no shards.
  std::unique_ptr<PathLock> lock(const std::string& id) const;
  // fill(staging folder) writes the shard's files there and returns shard.json's content.
  void write(const std::string& id, const std::function<nlohmann::json(const std::filesystem::path&)>& fill) const;
  // shard.json of a finished job, and its folder; an Error naming the file if it is unreadable, belongs
  // to another job or configuration, or was changed after it was written.
  nlohmann::json read(const std::string& id, std::filesystem::path* folder = nullptr) const;

  // Writes DIR/<kind>/config.yaml unless it is there; returns its path.
  std::string record_config() const;

  // Checkpoints of an unfinished job: saved atomically after each phase, removed with the shard written.
  void save_phases(const std::string& id, const nlohmann::json& phases) const;
  std::optional<nlohmann::json> phases(const std::string& id) const;

 private:
  std::string dir_;     // DIR/<kind>, or "" when disabled
  std::string config_;  // the resolved config text shards are checked against
  std::string config_sha256_;
};

// Everything a finished `xdq run` job contributes to the merged results.
struct JobShard {
  JobOutput output;
  YAML::Node model_trace;          // the job's model: file hash, preprocessing, input shape, folded BN
  YAML::Node calibration_trace;    // the job's calibration set: source, count, seed, content hash
  std::vector<SampleImages> samples;       // calibration-set strip or synthesized grid (first set only)
  std::vector<SampleImages> test_samples;  // test-domain strips (carried by job 0)
};

// The shards of `xdq run`, in DIR/<kind> (shard_folder(ShardKind::Run)), one per job of the plan.
class ShardStore {
 public:
  ShardStore(const ShardFolder::ConfigText& resolved_config, const std::string& out_dir, const std::string& kind)
      : folder_(resolved_config, out_dir, kind) {}

  bool enabled() const { return folder_.enabled(); }
  std::string id(const JobSpec& job, std::size_t index) const;
  bool done(const JobSpec& job, std::size_t index) const { return folder_.done(id(job, index)); }
  std::unique_ptr<PathLock> lock(const JobSpec& job, std::size_t index) const { return folder_.lock(id(job, index)); }
  std::string record_config() const { return folder_.record_config(); }
  void write(const JobSpec& job, std::size_t index, const JobShard& shard) const;
  JobShard read(const JobSpec& job, std::size_t index) const;

 private:
  ShardFolder folder_;
};


}  // namespace xdq
