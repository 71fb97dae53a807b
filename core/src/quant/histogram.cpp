#include "xdq/quant/histogram.h"

#include <algorithm>
#include <cmath>
#include <mutex>

#include <ATen/Parallel.h>

namespace xdq {

Histogram::Histogram(int bins) : bins_(bins), positive_(bins, 0.0), negative_(bins, 0.0) {}

Histogram::Histogram(double width, double min, double max, std::int64_t count, std::vector<double> positive,
                     std::vector<double> negative)
    : bins_(static_cast<int>(positive.size())), width_(width), min_(min), max_(max), count_(count),
      positive_(std::move(positive)), negative_(std::move(negative)) {}

std::vector<double> Histogram::magnitude() const {
  std::vector<double> out(bins_);
  for (int i = 0; i < bins_; ++i) out[i] = positive_[i] + negative_[i];
  return out;
}

void Histogram::grow_to(double amax) {
  if (width_ == 0.0) {
    width_ = amax > 0 ? amax / bins_ : 0.0;
    return;
  }
  int factor = 1;
  while (width_ * factor * bins_ <= amax) factor *= 2;
  if (factor == 1) return;
  for (auto* half : {&positive_, &negative_}) {
    std::vector<double> merged(bins_, 0.0);
    for (int i = 0; i < bins_; ++i) merged[i / factor] += (*half)[i];
    *half = std::move(merged);
  }
  width_ *= factor;
}

std::pair<double, double> Histogram::add(const at::Tensor& x_in) {
  at::Tensor x = x_in.detach().to(at::kCPU, at::kFloat).contiguous();  // binned here, on the CPU
  const std::int64_t n = x.numel();
  if (n == 0) return {0.0, 0.0};
  auto [lo_t, hi_t] = at::aminmax(x);
  const double lo = lo_t.item<double>(), hi = hi_t.item<double>();
  min_ = count_ ? std::min(min_, lo) : lo;
  max_ = count_ ? std::max(max_, hi) : hi;
  count_ += n;
  const double amax = std::max(-lo, hi);
  if (width_ == 0.0 || amax >= width_ * bins_) grow_to(amax);
  if (width_ == 0.0) {  // all zeros so far: they belong to bin 0
    positive_[0] += static_cast<double>(n);
    return {lo, hi};
  }
  const float inv_width = static_cast<float>(1.0 / width_);
  const int last = bins_ - 1;
  const float* data = x.data_ptr<float>();
  // Index into [positive bins | negative bins].
  const auto slot = [&](float v) {
    return (v < 0.0f ? bins_ : 0) + std::min(static_cast<int>(std::fabs(v) * inv_width), last);
  };
  // Integer histograms per parallel range, added into one under a lock: binning is the hot loop of
  // calibration, and counts add up the same in any order.
  std::vector<std::int64_t> total(2 * bins_, 0);
  std::mutex total_mutex;
  at::parallel_for(0, n, 1 << 16, [&](std::int64_t begin, std::int64_t end) {
    std::vector<std::int64_t> h(2 * bins_, 0);
    // Four interleaved copies: consecutive values landing in one bin (the zeros of a ReLU output) do not
    // chain every increment through the same memory word.
    constexpr int kCopies = 4;
    std::vector<std::uint32_t> copies(static_cast<std::size_t>(kCopies) * 2 * bins_, 0);
    const std::int64_t stride = 2 * bins_;
    for (std::int64_t start = begin; start < end; start += 1 << 20) {  // flushed before uint32 can overflow
      const std::int64_t stop = std::min(end, start + (1 << 20));
      std::int64_t i = start;
      for (; i + kCopies <= stop; i += kCopies)
        for (int c = 0; c < kCopies; ++c) ++copies[c * stride + slot(data[i + c])];
      for (; i < stop; ++i) ++copies[slot(data[i])];
      for (int c = 0; c < kCopies; ++c)
        for (std::int64_t k = 0; k < stride; ++k) {
          h[k] += copies[c * stride + k];
          copies[c * stride + k] = 0;
        }
    }
    std::lock_guard<std::mutex> lock(total_mutex);
    for (std::int64_t k = 0; k < stride; ++k) total[k] += h[k];
  });
  for (int i = 0; i < bins_; ++i) {
    positive_[i] += static_cast<double>(total[i]);
    negative_[i] += static_cast<double>(total[bins_ + i]);
  }
  return {lo, hi};
}

}  // namespace xdq
