#pragma once
// The calibration set as every consumer reads it -- calibrators' statistics and observers, graph passes,
// rounding optimizers: images in consecutive batches, from memory or streamed from a source that makes
// them batch by batch (image files decoded while they are read), so that nothing holds the whole set and
// a streamed set of any size costs a few batches of memory. Reconstruction still caches what its units
// need; that cache is the algorithm.
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include <ATen/ATen.h>

namespace xdq {

class CalibrationImages {
 public:
  // visit(images [b, C, H, W], first) for rows [first, first + b).
  using Visit = std::function<void(const at::Tensor& images, std::int64_t first)>;
  // A streamed source: visit on consecutive batches of at most `batch` rows covering rows [0, rows), in order.
  using Stream = std::function<void(std::int64_t batch, std::int64_t rows, const Visit& visit)>;

  CalibrationImages() = default;  // none (data-free)
  // In memory: [N, C, H, W]; an undefined tensor is none. Implicit, so a tensor is a calibration set.
  CalibrationImages(at::Tensor images);  // NOLINT(google-explicit-constructor)
  // `size` images of shape `image_shape` ([C, H, W]) made by `stream` when read.
  CalibrationImages(std::int64_t size, std::vector<std::int64_t> image_shape, Stream stream);

  std::int64_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  const std::vector<std::int64_t>& image_shape() const { return image_shape_; }
  bool streamed() const { return static_cast<bool>(stream_); }

  void for_each_batch(std::int64_t batch, const Visit& visit) const;
  // The first min(n, size()) images, in memory ([0, C, H, W] when there are none).
  at::Tensor head(std::int64_t n) const;
  // The images at `rows` (each in [0, size())), in that order, in memory: one pass over a streamed set.
  at::Tensor rows(const std::vector<std::int64_t>& rows) const;
  // The same set with `f` applied to every batch as it is read (preprocessing); a set in memory stays in
  // memory (f applied once).
  CalibrationImages mapped(const std::function<at::Tensor(const at::Tensor&)>& f) const;
  // FNV-1a 64 over the float32 bytes of every image in order, after the shape [N, C, H, W]: the same
  // for the same images whether in memory or streamed (one pass over a streamed set, then kept).
  std::uint64_t content_hash() const;

 private:
  std::int64_t size_ = 0;
  std::vector<std::int64_t> image_shape_;
  at::Tensor memory_;
  Stream stream_;
  std::shared_ptr<std::uint64_t> hash_;  // shared by copies; 0: not computed yet
};

}  // namespace xdq
