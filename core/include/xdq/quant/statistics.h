#pragma once
// What a calibrator sees of one activation over a calibration set, without the tensors themselves: a
// histogram (exact extremes, bins grown with the data) and a summary of every calibration batch. The
// core collects them once per model and calibration set and keeps them on disk, so that every other
// calibrator and bit width reads them instead of running the model over the data again.
//
// Every number is independent of the intra-op thread count (integer bin counts, fixed-size chunks for
// the sums), so a calibration gives the same range however the run is parallelized.
#include <cstdint>
#include <map>
#include <vector>

#include <ATen/ATen.h>

#include "xdq/quant/histogram.h"

namespace xdq {

struct BatchSummary {
  std::int64_t count = 0;
  double min = 0, max = 0;
  double mean = 0;
  double abs_deviation = 0;      // mean |x - mean| (the Laplace scale b)
  double squared_deviation = 0;  // mean (x - mean)^2
};

class ActivationStatistics {
 public:
  explicit ActivationStatistics(int bins = 2048) : histogram_(bins) {}
  ActivationStatistics(Histogram histogram, std::vector<BatchSummary> batches)
      : histogram_(std::move(histogram)), batches_(std::move(batches)) {}

  // One calibration batch of the activation.
  void add(const at::Tensor& x);

  const Histogram& histogram() const { return histogram_; }
  const std::vector<BatchSummary>& batches() const { return batches_; }

 private:
  Histogram histogram_;
  std::vector<BatchSummary> batches_;
};

// The statistics of every quantized activation of a model on one calibration set, by graph value.
using CalibrationStatistics = std::map<int, ActivationStatistics>;

}  // namespace xdq
