#pragma once
// Job shards (private to the experiment module): each finished job of a sweep is kept in the output
// folder, so an interrupted or failing sweep keeps what it finished, is resumed where it stopped, and
// can be run one job per process (cluster arrays) and merged.
//   DIR/jobs/config.yaml          the resolved config every shard belongs to (without provenance)
//   DIR/jobs/<id>/shard.json      the job's runs, layer-shift rows, data files and provenance
//   DIR/jobs/<id>/samples.xdqimg  the images the report shows for the job (strips, grids)
// A shard folder is written under a temporary name and renamed when complete: it exists whole or not.
#include <optional>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "pipeline.h"
#include "xdq/experiment/runner.h"

namespace xdq {

// Everything a finished job contributes to the merged results.
struct JobShard {
  JobOutput output;
  YAML::Node model_trace;          // the job's model: file hash, preprocessing, input shape, folded BN
  YAML::Node calibration_trace;    // the job's calibration set: source, count, seed, content hash
  std::vector<SampleImages> samples;       // calibration-set strip or synthesized grid (first set only)
  std::vector<SampleImages> test_samples;  // test-domain strips (carried by job 0)
};

class ShardStore {
 public:
  // `out_dir` empty: no shards. Refuses (Error) a folder whose shards belong to another config.
  ShardStore(const ExperimentConfig& cfg, const std::string& out_dir);

  bool enabled() const { return !dir_.empty(); }
  std::string id(const JobSpec& job, std::size_t index) const;
  bool done(const JobSpec& job, std::size_t index) const;
  void write(const JobSpec& job, std::size_t index, const JobShard& shard) const;
  JobShard read(const JobSpec& job, std::size_t index) const;

 private:
  const ExperimentConfig& cfg_;
  std::string dir_;     // DIR/jobs, or "" when disabled
  std::string config_;  // the resolved config text shards are checked against
};

}  // namespace xdq
