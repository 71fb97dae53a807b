#include "xdq/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iomanip>
#include <iostream>
#include <sstream>

namespace xdq {

ProgressBar::ProgressBar(std::ostream* out, std::string label, std::int64_t total)
    : out_(out),
      label_(std::move(label)),
      total_(std::max<std::int64_t>(total, 1)),
      terminal_((out == &std::cerr && isatty(2)) || (out == &std::cout && isatty(1))),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

void ProgressBar::update(std::int64_t done, const std::string& status) {
  if (!out_) return;
  const auto now = std::chrono::steady_clock::now();
  if (terminal_) {
    if (now - last_draw_ < std::chrono::milliseconds(500)) return;
    last_draw_ = now;
    draw(done, status, false);
  } else if (const int quarter = static_cast<int>(4 * done / total_);
             quarter > quarters_shown_ && quarter < 4 && now - start_ >= std::chrono::seconds(5)) {
    // In a log, only long loops get intermediate lines.
    quarters_shown_ = quarter;
    draw(done, status, false);
  }
}

void ProgressBar::finish(const std::string& status) {
  if (out_) draw(total_, status, true);
}

void ProgressBar::finish_if_long(const std::string& status) {
  if (!out_) return;
  if (std::chrono::steady_clock::now() - start_ >= std::chrono::seconds(5)) {
    finish(status);
  } else if (terminal_ && last_draw_ != start_) {
    *out_ << "\r\033[K" << std::flush;
  }
}

std::string ProgressBar::rate(std::int64_t done, const std::string& unit) const {
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  return std::to_string(static_cast<std::int64_t>(static_cast<double>(done) / std::max(seconds, 1e-9))) + " " + unit;
}

void ProgressBar::draw(std::int64_t done, const std::string& status, bool final) {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double fraction = static_cast<double>(done) / static_cast<double>(total_);
  std::ostringstream line;
  const int width = 20, filled = static_cast<int>(std::lround(width * fraction));
  line << label_ << " [" << std::string(filled, '#') << std::string(width - filled, '.') << "] " << std::setw(3)
       << static_cast<int>(std::lround(100 * fraction)) << "% " << status << std::fixed << std::setprecision(1);
  if (final) line << "  " << elapsed << " s";
  else if (done > 0) line << "  ETA " << elapsed * (1 - fraction) / fraction << " s";
  if (terminal_) *out_ << "\r\033[K" << line.str() << (final ? "\n" : "") << std::flush;
  else *out_ << line.str() << "\n" << std::flush;
}

}  // namespace xdq
