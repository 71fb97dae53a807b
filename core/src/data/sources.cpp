#include "xdq/data/sources.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <sstream>

#include <zlib.h>

#include "xdq/error.h"

namespace xdq {

namespace {

std::string env_or(const char* var, const std::string& fallback) {
  const char* v = std::getenv(var);
  return (v && *v) ? v : fallback;
}

// digits.csv.gz: 64 pixel values in 0..16 then the label, one digit per line.
Dataset load_sklearn_digits(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw Error(path + ": cannot open (install python3-sklearn or set XDQ_SKLEARN_DIGITS)");
  std::string text;
  char buffer[1 << 16];
  int n;
  while ((n = gzread(f, buffer, sizeof buffer)) > 0) text.append(buffer, n);
  gzclose(f);
  std::vector<float> pixels;
  std::vector<std::int64_t> labels;
  std::istringstream lines(text);
  int line_no = 0;
  for (std::string line; std::getline(lines, line);) {
    ++line_no;
    if (line.empty()) continue;
    std::istringstream fields(line);
    std::vector<double> values;
    for (std::string v; std::getline(fields, v, ',');) values.push_back(std::atof(v.c_str()));
    if (values.size() != 65) throw Error(path + ":" + std::to_string(line_no) + ": expected 65 values");
    for (int i = 0; i < 64; ++i) pixels.push_back(static_cast<float>(values[i] / 16.0));
    labels.push_back(static_cast<std::int64_t>(values[64]));
  }
  const auto count = static_cast<std::int64_t>(labels.size());
  // A 1-pixel margin (10x10 frame) gives the digits the proportions of MNIST-style 20x20 cells with their
  // 2-pixel margins; without it they fill the whole frame and look like another geometry, not another hand.
  at::Tensor images = at::constant_pad_nd(at::tensor(pixels).view({count, 1, 8, 8}), {1, 1, 1, 1}, 0.0);
  return Dataset{"sklearn_digits", images, at::tensor(labels)};
}

Dataset noise(const std::string& name, std::int64_t count, const InputShape& s, std::uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const std::vector<std::int64_t> shape{count, s.channels, s.height, s.width};
  at::Tensor images = name == "noise_gaussian" ? at::normal(0.5, 0.25, shape, gen).clamp_(0.0, 1.0)
                                               : at::rand(shape, gen);
  return Dataset{name, images, {}};
}

}  // namespace

const std::vector<std::string>& known_datasets() {
  static const std::vector<std::string> names = {"fashion_mnist", "opencv_digits", "sklearn_digits", "natural",
                                                 "noise_gaussian", "noise_uniform", "none"};
  return names;
}

bool is_known_dataset(const std::string& name) {
  if (name.rfind("folder:", 0) == 0) return name.size() > 7;
  const auto& k = known_datasets();
  return std::find(k.begin(), k.end(), name) != k.end();
}

bool is_labeled_dataset(const std::string& name) {
  return name != "natural" && name != "noise_gaussian" && name != "noise_uniform" && name != "none";
}

bool parse_dataset_split(const std::string& name, std::string& dataset, Split& split) {
  const auto dot = name.rfind('.');
  if (dot == std::string::npos || name.rfind("folder:", 0) == 0) return false;
  const std::string suffix = name.substr(dot + 1);
  if (suffix != "train" && suffix != "test") return false;
  dataset = name.substr(0, dot);
  split = suffix == "train" ? Split::Train : Split::Test;
  return is_known_dataset(dataset);
}

Dataset load_dataset(const std::string& name, Split split, const DataLocations& where, const InputShape& shape,
                     std::int64_t count, std::uint64_t seed, const FolderOptions& folder) {
  Dataset d;
  if (name == "fashion_mnist") {
    d = load_fashion_mnist(fashion_mnist_dir(where.fashion_mnist), split);
  } else if (name == "sklearn_digits") {
    d = load_sklearn_digits(where.sklearn_digits.empty()
                                ? env_or("XDQ_SKLEARN_DIGITS", "/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz")
                                : where.sklearn_digits);
  } else if (name == "opencv_digits" || name == "natural") {
    const std::string dir = where.opencv_samples.empty()
                                ? env_or("XDQ_OPENCV_SAMPLES_DIR", "/usr/share/doc/opencv-doc/examples/data")
                                : where.opencv_samples;
    d = name == "opencv_digits" ? load_opencv_digits(dir, split) : natural_crops(dir, count, shape, seed);
  } else if (name == "noise_gaussian" || name == "noise_uniform") {
    d = noise(name, count, shape, seed);
  } else if (name.rfind("folder:", 0) == 0) {
    const ImageFileList files = list_image_folder(name.substr(7), split, folder);
    const at::Tensor rows = subset_rows(static_cast<std::int64_t>(files.files.size()), count, seed);
    d = load_image_files(files, rows, shape, folder.skip_unreadable);
    if (d.size() < rows.numel())
      std::cerr << "xdq: warning: " << files.root << ": " << rows.numel() - d.size() << " unreadable image file(s) left out\n";
  } else if (name == "none") {
    d = Dataset{name, at::empty({0, shape.channels, shape.height, shape.width}), {}};
  } else {
    throw Error("unknown dataset '" + name + "'");
  }
  d.name = name + (split == Split::Train ? ".train" : ".test");
  // Folders are decoded to `shape` already; generated images are made at its size and need at most the
  // channel count; datasets of their own size get the whole geometry.
  const bool folder_images = name.rfind("folder:", 0) == 0;
  const bool generated = name == "natural" || name == "noise_gaussian" || name == "noise_uniform" || name == "none";
  if (folder_images) return d;
  InputShape fit = shape;
  if (generated) {
    fit.resize = 0;
    fit.bgr = false;
  }
  d.images = fit_to_input(d.images, fit);
  return d;
}

}  // namespace xdq
