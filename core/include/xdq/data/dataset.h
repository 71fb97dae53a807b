#pragma once
// Images as one float tensor [N, C, H, W] in [0, 1] (unnormalized: the model's preprocessing is applied
// later), labels as int64 [N] (undefined for unlabeled sources).
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "xdq/hash.h"
#include "xdq/ir/preprocess.h"

namespace xdq {

struct Dataset {
  std::string name;
  at::Tensor images;
  at::Tensor labels;
  // Where the rows come from when the set is a mixture: consecutive blocks (domain name, rows), in order.
  // Empty for a set of one source; subsets and slices drop it.
  std::vector<std::pair<std::string, std::int64_t>> parts;

  std::int64_t size() const { return images.defined() ? images.size(0) : 0; }
  bool labeled() const { return labels.defined(); }

  // Deterministic random subset of `count` images (all when count <= 0 or >= size()).
  Dataset subset(std::int64_t count, std::uint64_t seed) const;
  // Rows [begin, end).
  Dataset slice(std::int64_t begin, std::int64_t end) const;
  // 16-hex-digit FNV-1a hash of images and labels: traces a result back to its calibration set.
  std::string content_hash() const;
};

// The rows Dataset::subset(count, seed) keeps of a `size`-row set, in its order (all, in order, when
// count <= 0 or >= size): a set on disk can be subset before it is decoded.
at::Tensor subset_rows(std::int64_t size, std::int64_t count, std::uint64_t seed);

// A dataset as one binary file (synthesized sets on disk): magic "XDQIMG2", int64 N C H W, int64 labeled,
// float32 images, int64 labels, FNV-1a 64 checksum of both. save_dataset writes a temporary file and renames it into place; a short or
// foreign file read back is an Error naming it.
void save_dataset(const Dataset& data, const std::string& path);
Dataset load_dataset_file(const std::string& path);

}  // namespace xdq
