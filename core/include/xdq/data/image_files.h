#pragma once
// Image-file sources (OpenCV): opencv-doc's digits and photographs, and user image folders.
// In a build without OpenCV these throw an Error saying so.
#include <cstdint>
#include <string>
#include <vector>

#include "xdq/data/dataset.h"
#include "xdq/data/fashion_mnist.h"

namespace xdq {

struct InputShape;

// digits.png: 2000x1000, 20x20 cells, 100 per row, 5 rows per class; per class the first 400 cells
// (row-major) are the train split, the last 100 the test split.
Dataset load_opencv_digits(const std::string& samples_dir, Split split);

// `count` random square grayscale crops (10-60 % of the shorter side) of the *.jpg photographs in
// `samples_dir`, resized to `shape`, seeded.
Dataset natural_crops(const std::string& samples_dir, std::int64_t count, const InputShape& shape, std::uint64_t seed);

// root/<class>/<image>, classes = sorted sub-folder names -> 0, 1, ...; each image resized to `shape`.
Dataset load_image_folder(const std::string& root, const InputShape& shape);

// PNG outputs of a report. image_output_available() is false in a build without OpenCV.
bool image_output_available();
// Images [K, C, H, W] in [0, 1] (clipped) in rows of `columns`, each magnified `scale` times.
std::string render_grid_png(const at::Tensor& images, int columns, int scale);
// A matrix with its value printed in every cell (NaN: empty cell), rows and columns labeled.
std::string render_heatmap_png(const std::string& title, const std::vector<std::string>& rows,
                               const std::vector<std::string>& cols, const std::vector<std::vector<double>>& values);
// Line plot: one (x, y) series per name, distinct colours, legend; log10 y axis when log_y (y > 0 only).
std::string render_curves_png(const std::string& title, const std::vector<std::string>& names,
                              const std::vector<std::vector<std::pair<double, double>>>& series, bool log_y);
// Horizontal bars: one row per label, one bar per series in each row (values[series][row]), legend.
std::string render_bars_png(const std::string& title, const std::vector<std::string>& labels,
                            const std::vector<std::string>& series_names, const std::vector<std::vector<double>>& values);

}  // namespace xdq
