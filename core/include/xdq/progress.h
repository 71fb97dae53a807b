#pragma once
// A progress bar for long loops (reconstruction, synthesis): on a terminal it redraws one line
// (label, bar, percent, status, ETA) at most every half second; in a log it writes the final line, and a
// line at each quarter of loops that run longer than 5 s.
#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <string>

namespace xdq {

class ProgressBar {
 public:
  // `out` may be null (silent).
  ProgressBar(std::ostream* out, std::string label, std::int64_t total);
  void update(std::int64_t done, const std::string& status);
  void finish(const std::string& status);
  // For passes that are usually short (an evaluation): the final line only when the loop took 5 s or
  // more; on a terminal a shorter one's bar is erased.
  void finish_if_long(const std::string& status);
  // "<done per second since the start> <unit>", e.g. "1830 img/s".
  std::string rate(std::int64_t done, const std::string& unit) const;

 private:
  void draw(std::int64_t done, const std::string& status, bool final);

  std::ostream* out_;
  std::string label_;
  std::int64_t total_;
  bool terminal_;
  int quarters_shown_ = 0;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace xdq
