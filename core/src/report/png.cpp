#include "xdq/report/png.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "xdq/error.h"

namespace xdq {

bool image_output_available() { return true; }

std::string render_grid_png(const at::Tensor& images, int columns, int scale) {
  at::Tensor x = (images.clamp(0, 1) * 255).round().to(at::kByte);
  const int k = static_cast<int>(x.size(0)), c = static_cast<int>(x.size(1));
  const int h = static_cast<int>(x.size(2)), w = static_cast<int>(x.size(3));
  columns = std::max(1, std::min(columns, k));
  const int rows = (k + columns - 1) / columns;
  if (rows * columns > k) x = at::cat({x, at::zeros({rows * columns - k, c, h, w}, x.options())});
  const at::Tensor grid =
      x.view({rows, columns, c, h, w}).permute({0, 3, 1, 4, 2}).reshape({rows * h, columns * w, c}).contiguous();
  cv::Mat m(rows * h, columns * w, c == 3 ? CV_8UC3 : CV_8UC1, grid.data_ptr());
  cv::Mat big;
  cv::resize(m, big, cv::Size(), scale, scale, cv::INTER_NEAREST);
  if (c == 3) cv::cvtColor(big, big, cv::COLOR_RGB2BGR);
  std::vector<uchar> bytes;
  cv::imencode(".png", big, bytes);
  return std::string(bytes.begin(), bytes.end());
}

std::string render_heatmap_png(const std::string& title, const std::vector<std::string>& rows,
                               const std::vector<std::string>& cols, const std::vector<std::vector<double>>& values) {
  std::size_t longest = 0;
  for (const auto& r : rows) longest = std::max(longest, r.size());
  const int cell_w = 110, cell_h = 40, top = 90;
  const int left = std::max(170, 12 + 9 * static_cast<int>(longest));
  const int width = left + cell_w * static_cast<int>(cols.size()) + 10;
  const int height = top + cell_h * static_cast<int>(rows.size()) + 10;
  cv::Mat canvas(height, width, CV_8UC3, cv::Scalar(255, 255, 255));
  double lo = 1e300, hi = -1e300;
  for (const auto& r : values)
    for (double v : r)
      if (!std::isnan(v)) lo = std::min(lo, v), hi = std::max(hi, v);
  const auto font = cv::FONT_HERSHEY_SIMPLEX;
  cv::putText(canvas, title, {10, 25}, font, 0.55, {0, 0, 0}, 1, cv::LINE_AA);
  cv::putText(canvas, "rows: calibrated on, columns: tested on", {10, 50}, font, 0.45, {80, 80, 80}, 1, cv::LINE_AA);
  for (std::size_t j = 0; j < cols.size(); ++j)
    cv::putText(canvas, cols[j].substr(0, 14), {left + static_cast<int>(j) * cell_w + 4, top - 10}, font, 0.42, {0, 0, 0}, 1, cv::LINE_AA);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const int y = top + static_cast<int>(i) * cell_h;
    cv::putText(canvas, rows[i], {6, y + 26}, font, 0.45, {0, 0, 0}, 1, cv::LINE_AA);
    for (std::size_t j = 0; j < cols.size(); ++j) {
      const double v = values[i][j];
      const cv::Rect cell(left + static_cast<int>(j) * cell_w, y, cell_w - 2, cell_h - 2);
      if (std::isnan(v)) {
        cv::rectangle(canvas, cell, {230, 230, 230}, cv::FILLED);
        continue;
      }
      // Viridis colour of the value within [lo, hi].
      cv::Mat level(1, 1, CV_8UC1, cv::Scalar(hi > lo ? 255.0 * (v - lo) / (hi - lo) : 255.0)), colour;
      cv::applyColorMap(level, colour, cv::COLORMAP_VIRIDIS);
      const cv::Vec3b bgr = colour.at<cv::Vec3b>(0, 0);
      cv::rectangle(canvas, cell, cv::Scalar(bgr[0], bgr[1], bgr[2]), cv::FILLED);
      const bool dark = bgr[0] * 0.114 + bgr[1] * 0.587 + bgr[2] * 0.299 < 128;
      char text[32];
      std::snprintf(text, sizeof text, "%.2f", v);
      cv::putText(canvas, text, {cell.x + 22, cell.y + 25}, font, 0.55, dark ? cv::Scalar(255, 255, 255) : cv::Scalar(0, 0, 0), 1,
                  cv::LINE_AA);
    }
  }
  std::vector<uchar> bytes;
  cv::imencode(".png", canvas, bytes);
  return std::string(bytes.begin(), bytes.end());
}

std::string render_curves_png(const std::string& title, const std::vector<std::string>& names,
                              const std::vector<std::vector<std::pair<double, double>>>& series, bool log_y,
                              bool connect) {
  const int left = 70, right = 200, top = 40, bottom = 40, plot_w = 560, plot_h = 320;
  cv::Mat canvas(top + plot_h + bottom, left + plot_w + right, CV_8UC3, cv::Scalar(255, 255, 255));
  auto y_of = [&](double y) { return log_y ? std::log10(std::max(y, 1e-30)) : y; };
  double x_lo = 1e300, x_hi = -1e300, y_lo = 1e300, y_hi = -1e300;
  for (const auto& s : series)
    for (const auto& [x, y] : s) {
      if (log_y && !(y > 0)) continue;
      x_lo = std::min(x_lo, x), x_hi = std::max(x_hi, x);
      y_lo = std::min(y_lo, y_of(y)), y_hi = std::max(y_hi, y_of(y));
    }
  if (x_lo > x_hi) x_lo = 0, x_hi = 1, y_lo = 0, y_hi = 1;
  if (x_hi == x_lo) x_hi = x_lo + 1;
  if (y_hi == y_lo) y_hi = y_lo + 1;
  const auto font = cv::FONT_HERSHEY_SIMPLEX;
  auto px = [&](double x, double y) {
    return cv::Point(left + static_cast<int>((x - x_lo) / (x_hi - x_lo) * plot_w),
                     top + plot_h - static_cast<int>((y_of(y) - y_lo) / (y_hi - y_lo) * plot_h));
  };
  cv::putText(canvas, title, {10, 25}, font, 0.5, {0, 0, 0}, 1, cv::LINE_AA);
  cv::rectangle(canvas, {left, top}, {left + plot_w, top + plot_h}, {0, 0, 0}, 1);
  char text[48];
  for (int k = 0; k <= 4; ++k) {
    const double yv = y_lo + (y_hi - y_lo) * k / 4.0;
    std::snprintf(text, sizeof text, log_y ? "%.1e" : "%.3g", log_y ? std::pow(10.0, yv) : yv);
    const int y = top + plot_h - plot_h * k / 4;
    cv::putText(canvas, text, {4, y + 4}, font, 0.35, {60, 60, 60}, 1, cv::LINE_AA);
    const double xv = x_lo + (x_hi - x_lo) * k / 4.0;
    std::snprintf(text, sizeof text, "%.5g", xv);
    cv::putText(canvas, text, {left + plot_w * k / 4 - 10, top + plot_h + 18}, font, 0.35, {60, 60, 60}, 1, cv::LINE_AA);
  }
  for (std::size_t i = 0; i < series.size(); ++i) {
    cv::Mat level(1, 1, CV_8UC1, cv::Scalar(series.size() > 1 ? 230.0 * i / (series.size() - 1) : 0.0)), colour;
    cv::applyColorMap(level, colour, cv::COLORMAP_TURBO);
    const cv::Vec3b c = colour.at<cv::Vec3b>(0, 0);
    const cv::Scalar bgr(c[0], c[1], c[2]);
    std::vector<cv::Point> points;
    for (const auto& [x, y] : series[i])
      if (!log_y || y > 0) points.push_back(px(x, y));
    if (connect && points.size() > 1) cv::polylines(canvas, points, false, bgr, 1, cv::LINE_AA);
    if (!connect || points.size() <= 40)
      for (const auto& pt : points) cv::circle(canvas, pt, 3, bgr, cv::FILLED, cv::LINE_AA);
    const int ly = top + 12 + 14 * static_cast<int>(i);
    if (ly < top + plot_h + bottom - 4) {
      cv::line(canvas, {left + plot_w + 10, ly - 4}, {left + plot_w + 28, ly - 4}, bgr, 2);
      cv::putText(canvas, i < names.size() ? names[i].substr(0, 24) : "", {left + plot_w + 32, ly}, font, 0.35, {0, 0, 0}, 1,
                  cv::LINE_AA);
    }
  }
  std::vector<uchar> bytes;
  cv::imencode(".png", canvas, bytes);
  return std::string(bytes.begin(), bytes.end());
}

std::string render_bars_png(const std::string& title, const std::vector<std::string>& labels,
                            const std::vector<std::string>& series_names, const std::vector<std::vector<double>>& values) {
  std::size_t longest = 0;
  for (const auto& l : labels) longest = std::max(longest, l.size());
  const int series = static_cast<int>(values.size());
  const int bar_h = 9, row_h = bar_h * series + 6, top = 60, left = std::max(120, 12 + 7 * static_cast<int>(longest));
  const int plot_w = 420, width = left + plot_w + 80;
  const int height = top + row_h * static_cast<int>(labels.size()) + 20;
  cv::Mat canvas(height, width, CV_8UC3, cv::Scalar(255, 255, 255));
  double hi = 0;
  for (const auto& s : values)
    for (double v : s)
      if (std::isfinite(v)) hi = std::max(hi, v);
  if (hi <= 0) hi = 1;
  const auto font = cv::FONT_HERSHEY_SIMPLEX;
  cv::putText(canvas, title, {10, 22}, font, 0.5, {0, 0, 0}, 1, cv::LINE_AA);
  const cv::Scalar palette[] = {{180, 119, 31}, {14, 127, 255}, {44, 160, 44}, {40, 39, 214}};
  for (int s = 0; s < series; ++s) {
    const int x = 10 + 170 * s;
    cv::rectangle(canvas, {x, 34}, {x + 14, 44}, palette[s % 4], cv::FILLED);
    cv::putText(canvas, s < static_cast<int>(series_names.size()) ? series_names[s] : "", {x + 18, 44}, font, 0.4,
                {0, 0, 0}, 1, cv::LINE_AA);
  }
  char text[32];
  for (std::size_t i = 0; i < labels.size(); ++i) {
    const int y = top + static_cast<int>(i) * row_h;
    cv::putText(canvas, labels[i], {6, y + row_h / 2 + 4}, font, 0.35, {0, 0, 0}, 1, cv::LINE_AA);
    for (int s = 0; s < series; ++s) {
      const double v = i < values[s].size() ? values[s][i] : 0.0;
      const int w = std::isfinite(v) ? static_cast<int>(plot_w * std::max(0.0, v) / hi) : plot_w;
      const int by = y + s * bar_h;
      cv::rectangle(canvas, {left, by}, {left + std::max(w, 1), by + bar_h - 2}, palette[s % 4], cv::FILLED);
      std::snprintf(text, sizeof text, std::isfinite(v) ? "%.1f" : "inf", v);
      cv::putText(canvas, text, {left + std::max(w, 1) + 4, by + bar_h - 2}, font, 0.3, {60, 60, 60}, 1, cv::LINE_AA);
    }
  }
  std::vector<uchar> bytes;
  cv::imencode(".png", canvas, bytes);
  return std::string(bytes.begin(), bytes.end());
}

}  // namespace xdq
