#include "xdq/quant/statistics.h"

#include <cmath>

#include <ATen/Parallel.h>

namespace xdq {

namespace {

// Sum of f(x_i) in double over fixed chunks of the data, added in chunk order: the same bits for any
// number of threads.
template <typename F>
double chunked_sum(const float* data, std::int64_t n, F f) {
  constexpr std::int64_t kChunk = 1 << 16;
  const std::int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(static_cast<std::size_t>(chunks), 0.0);
  at::parallel_for(0, chunks, 1, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t c = begin; c < end; ++c) {
      double s = 0.0;
      for (std::int64_t i = c * kChunk, last = std::min(n, (c + 1) * kChunk); i < last; ++i) s += f(data[i]);
      partial[static_cast<std::size_t>(c)] = s;
    }
  });
  double total = 0.0;
  for (double s : partial) total += s;
  return total;
}

}  // namespace

void ActivationStatistics::add(const at::Tensor& x_in) {
  const at::Tensor x = x_in.detach().to(at::kFloat).contiguous();
  const std::int64_t n = x.numel();
  if (n == 0) return;
  histogram_.add(x);
  BatchSummary b;
  b.count = n;
  auto [lo, hi] = at::aminmax(x);
  b.min = lo.item<double>();
  b.max = hi.item<double>();
  const float* data = x.data_ptr<float>();
  b.mean = chunked_sum(data, n, [](float v) { return static_cast<double>(v); }) / static_cast<double>(n);
  const double mean = b.mean;
  b.abs_deviation = chunked_sum(data, n, [mean](float v) { return std::fabs(v - mean); }) / static_cast<double>(n);
  b.squared_deviation =
      chunked_sum(data, n, [mean](float v) { return (v - mean) * (v - mean); }) / static_cast<double>(n);
  batches_.push_back(b);
}

}  // namespace xdq
