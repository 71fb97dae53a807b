#pragma once
#include <cstdint>
#include <string>

namespace xdq {

// Where a unit-by-unit optimizer spent its time on one unit (results.json lists them per run), so
// speed compares with other implementations without guessing.
struct UnitTiming {
  std::string name;
  std::int64_t iterations = 0;
  double caching_seconds = 0;        // the unit's inputs and targets over the calibration set, before the loop
  double seconds_per_iteration = 0;  // the loop alone: sampling, forward, backward, optimizer step
  std::int64_t step_iterations = 0;  // a second pass learning activation steps (BRECQ), if any
  double step_caching_seconds = 0, step_seconds_per_iteration = 0;
  double seconds = 0;                // everything spent on the unit
};

}  // namespace xdq
