#include "xdq/experiment/results.h"

#include <algorithm>

namespace xdq {

std::size_t ExperimentResults::failed_runs() const {
  return static_cast<std::size_t>(std::count_if(runs.begin(), runs.end(), [](const RunResult& r) { return r.failed(); }));
}

}  // namespace xdq
