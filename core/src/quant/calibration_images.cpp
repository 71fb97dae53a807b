#include "xdq/quant/calibration_images.h"

#include <algorithm>
#include <mutex>

#include "xdq/error.h"
#include "xdq/hash.h"

namespace xdq {

namespace {
constexpr std::uint64_t kFnvBasis = 1469598103934665603ULL;
std::mutex hash_mutex;  // content hashes are computed once per set, rarely: one lock for all
}  // namespace

CalibrationImages::CalibrationImages(at::Tensor images) : hash_(std::make_shared<std::uint64_t>(0)) {
  if (!images.defined()) return;
  if (images.dim() != 4) throw Error("calibration images: expected [N, C, H, W]");
  size_ = images.size(0);
  image_shape_ = images.sizes().slice(1).vec();
  memory_ = std::move(images);
}

CalibrationImages::CalibrationImages(std::int64_t size, std::vector<std::int64_t> image_shape, Stream stream)
    : size_(size), image_shape_(std::move(image_shape)), stream_(std::move(stream)),
      hash_(std::make_shared<std::uint64_t>(0)) {}

void CalibrationImages::for_each_batch(std::int64_t batch, const Visit& visit) const {
  if (batch <= 0) throw Error("calibration images: batch size must be positive");
  if (stream_) {
    stream_(batch, size_, visit);
    return;
  }
  for (std::int64_t b = 0; b < size_; b += batch) visit(memory_.slice(0, b, std::min(size_, b + batch)), b);
}

at::Tensor CalibrationImages::head(std::int64_t n) const {
  n = std::max<std::int64_t>(0, std::min(n, size_));
  if (!stream_) {
    if (memory_.defined()) return memory_.slice(0, 0, n);
    std::vector<std::int64_t> none{0};
    none.insert(none.end(), image_shape_.begin(), image_shape_.end());
    return at::empty(none.size() == 4 ? none : std::vector<std::int64_t>{0, 0, 0, 0});
  }
  std::vector<at::Tensor> parts;
  if (n > 0) stream_(n, n, [&](const at::Tensor& images, std::int64_t) { parts.push_back(images); });
  if (parts.empty()) return head(0);
  return parts.size() == 1 ? parts.front() : at::cat(parts);
}

at::Tensor CalibrationImages::rows(const std::vector<std::int64_t>& rows) const {
  const at::Tensor index = at::tensor(rows, at::kLong);
  if (!stream_) return memory_.index_select(0, index).contiguous();
  std::vector<std::int64_t> shape{static_cast<std::int64_t>(rows.size())};
  shape.insert(shape.end(), image_shape_.begin(), image_shape_.end());
  at::Tensor out = at::empty(shape);
  // Where each row goes (a row may be asked twice), visited in order of the stream.
  std::vector<std::vector<std::int64_t>> targets(static_cast<std::size_t>(size_));
  for (std::size_t k = 0; k < rows.size(); ++k) targets.at(static_cast<std::size_t>(rows[k])).push_back(static_cast<std::int64_t>(k));
  for_each_batch(256, [&](const at::Tensor& images, std::int64_t first) {
    for (std::int64_t i = 0; i < images.size(0); ++i)
      for (std::int64_t k : targets[static_cast<std::size_t>(first + i)]) out[k].copy_(images[i]);
  });
  return out;
}

CalibrationImages CalibrationImages::mapped(const std::function<at::Tensor(const at::Tensor&)>& f) const {
  if (!stream_) return memory_.defined() ? CalibrationImages(f(memory_)) : *this;
  const Stream source = stream_;
  std::vector<std::int64_t> shape = image_shape_;
  return CalibrationImages(size_, std::move(shape), [source, f](std::int64_t batch, std::int64_t rows, const Visit& visit) {
    source(batch, rows, [&](const at::Tensor& images, std::int64_t first) { visit(f(images), first); });
  });
}

std::uint64_t CalibrationImages::content_hash() const {
  {
    std::lock_guard<std::mutex> lock(hash_mutex);
    if (hash_ && *hash_ != 0) return *hash_;
  }
  std::vector<std::int64_t> shape{size_};
  shape.insert(shape.end(), image_shape_.begin(), image_shape_.end());
  std::uint64_t h = fnv1a(shape.data(), shape.size() * sizeof(std::int64_t), kFnvBasis);
  for_each_batch(256, [&](const at::Tensor& images, std::int64_t) {
    const at::Tensor x = images.to(at::kFloat).cpu().contiguous();
    h = fnv1a(x.data_ptr(), x.nbytes(), h);
  });
  std::lock_guard<std::mutex> lock(hash_mutex);
  if (hash_) *hash_ = h;
  return h;
}

}  // namespace xdq
