#pragma once
#include <cstdint>
#include <iosfwd>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "xdq/quant/ptq.h"
#include "xdq/quant/statistics.h"

namespace xdq {

// Activation statistics of a BN-folded graph on a calibration set, collected once and kept on disk
// (<cache>/statistics/, keyed by hashes of the graph's structure and parameters, the images, the batch
// size, the bin count and the quantized values), so that another calibrator or bit width, in this run or
// a later one, does not run the model over the data again. Safe to share between parallel runs.
class StatisticsCache {
 public:
  explicit StatisticsCache(std::string dir) : dir_(std::move(dir)) {}
  std::shared_ptr<const CalibrationStatistics> get(const QuantizedModel& model, const CalibrationImages& images,
                                                   std::int64_t batch_size, int bins, std::ostream& log);

 private:
  std::string dir_;
  std::mutex mutex_;
  std::map<std::string, std::shared_ptr<const CalibrationStatistics>> loaded_;  // by file
};

}  // namespace xdq
