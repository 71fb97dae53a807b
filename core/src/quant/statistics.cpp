#include "xdq/quant/statistics.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <tuple>

#include <ATen/Parallel.h>

namespace xdq {

namespace {

// Sums of f(x_i) in double over fixed chunks of the data, each chunk with eight interleaved accumulators
// (so the loop vectorizes), chunks added in order: the same bits for any number of threads.
template <int K, typename F>
std::array<double, K> chunked_sums(const float* data, std::int64_t n, F f) {
  constexpr std::int64_t kChunk = 1 << 16;
  constexpr int kLanes = 8;
  const std::int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<std::array<double, K>> partial(static_cast<std::size_t>(chunks));
  at::parallel_for(0, chunks, 1, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t c = begin; c < end; ++c) {
      double lanes[K][kLanes] = {};
      const std::int64_t first = c * kChunk, last = std::min(n, first + kChunk);
      std::int64_t i = first;
      for (; i + kLanes <= last; i += kLanes)
        for (int l = 0; l < kLanes; ++l) {
          const auto values = f(data[i + l]);
          for (int k = 0; k < K; ++k) lanes[k][l] += values[k];
        }
      for (; i < last; ++i) {
        const auto values = f(data[i]);
        for (int k = 0; k < K; ++k) lanes[k][0] += values[k];
      }
      for (int k = 0; k < K; ++k) {
        double s = 0.0;
        for (int l = 0; l < kLanes; ++l) s += lanes[k][l];
        partial[static_cast<std::size_t>(c)][k] = s;
      }
    }
  });
  std::array<double, K> total{};
  for (const auto& p : partial)
    for (int k = 0; k < K; ++k) total[k] += p[k];
  return total;
}

}  // namespace

void ActivationStatistics::add(const at::Tensor& x_in) {
  const at::Tensor x = x_in.detach().to(at::kCPU, at::kFloat).contiguous();  // summed here, on the CPU
  const std::int64_t n = x.numel();
  if (n == 0) return;
  BatchSummary b;
  b.count = n;
  std::tie(b.min, b.max) = histogram_.add(x);
  const float* data = x.data_ptr<float>();
  const double inv_n = 1.0 / static_cast<double>(n);
  b.mean = chunked_sums<1>(data, n, [](float v) { return std::array<double, 1>{v}; })[0] * inv_n;
  const double mean = b.mean;
  const auto deviations = chunked_sums<2>(data, n, [mean](float v) {
    const double d = v - mean;
    return std::array<double, 2>{std::fabs(d), d * d};
  });
  b.abs_deviation = deviations[0] * inv_n;
  b.squared_deviation = deviations[1] * inv_n;
  batches_.push_back(b);
}

}  // namespace xdq
