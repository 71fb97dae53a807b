#pragma once
// The report's pictures as PNG bytes (OpenCV). In a build without OpenCV image_output_available() is
// false and the renderers throw an Error saying so.
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

namespace xdq {

bool image_output_available();
// Images [K, C, H, W] in [0, 1] (clipped) in rows of `columns`, each magnified `scale` times.
std::string render_grid_png(const at::Tensor& images, int columns, int scale);
// A matrix with its value printed in every cell (NaN: empty cell), rows and columns labeled.
std::string render_heatmap_png(const std::string& title, const std::vector<std::string>& rows,
                               const std::vector<std::string>& cols, const std::vector<std::vector<double>>& values);
// Line plot: one (x, y) series per name, distinct colours, legend; log10 y axis when log_y (y > 0 only);
// points alone (a scatter plot) unless `connect`.
std::string render_curves_png(const std::string& title, const std::vector<std::string>& names,
                              const std::vector<std::vector<std::pair<double, double>>>& series, bool log_y,
                              bool connect = true);
// Horizontal bars: one row per label, one bar per series in each row (values[series][row]), legend.
std::string render_bars_png(const std::string& title, const std::vector<std::string>& labels,
                            const std::vector<std::string>& series_names, const std::vector<std::vector<double>>& values);

}  // namespace xdq
