#pragma once
// Streaming histogram of activation values for range calibrators (KL, percentile, MSE).
// Positive and negative values go into two halves of `bins` bins each over [0, bins * width), sharing
// one bin width. When a batch exceeds the range, the width doubles (merging bin pairs) until it fits:
// every value is binned exactly as if the final width had been used from the start (up to float
// rounding at bin edges), with one pass over the data.
#include <cstdint>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

namespace xdq {

class Histogram {
 public:
  explicit Histogram(int bins = 2048);
  // A histogram as saved (bins per sign = positive.size()).
  Histogram(double width, double min, double max, std::int64_t count, std::vector<double> positive,
            std::vector<double> negative);

  // Adds one batch; returns its minimum and maximum.
  std::pair<double, double> add(const at::Tensor& x);

  int bins() const { return bins_; }
  double width() const { return width_; }
  double min() const { return min_; }  // exact observed extremes
  double max() const { return max_; }
  std::int64_t count() const { return count_; }
  const std::vector<double>& positive() const { return positive_; }  // bin i: [i*w, (i+1)*w)
  const std::vector<double>& negative() const { return negative_; }  // bin i: -(i+1)*w < x <= -i*w
  std::vector<double> magnitude() const;  // |x|: positive + negative

 private:
  void grow_to(double amax);
  int bins_;
  double width_ = 0.0;
  double min_ = 0.0, max_ = 0.0;
  std::int64_t count_ = 0;
  std::vector<double> positive_, negative_;
};

}  // namespace xdq
