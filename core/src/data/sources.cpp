#include "xdq/data/sources.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <sstream>

#include <zlib.h>

#include "xdq/data/image_files.h"
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

namespace {

// torchvision's Resize(int) then CenterCrop: the shorter side becomes shape.resize (the longer one
// int(resize * long / short)), a same-size image is left as it is; the crop's offset rounds half to even
// (Python's round), and a side smaller than the crop is zero-padded around the image first.
at::Tensor resize_and_center_crop(at::Tensor images, const InputShape& shape) {
  const std::int64_t h = images.size(2), w = images.size(3);
  const std::int64_t shorter = std::min(h, w), longer = std::max(h, w);
  const auto stretched = static_cast<std::int64_t>(static_cast<double>(shape.resize) * static_cast<double>(longer) /
                                                   static_cast<double>(shorter));
  const std::int64_t nh = h <= w ? shape.resize : stretched, nw = h <= w ? stretched : shape.resize;
  if (nh != h || nw != w) {
    switch (shape.interpolation) {
      case Interpolation::Bilinear: images = at::_upsample_bilinear2d_aa(images, {nh, nw}, false); break;
      case Interpolation::Bicubic: images = at::_upsample_bicubic2d_aa(images, {nh, nw}, false); break;
      case Interpolation::Nearest: images = at::upsample_nearest2d(images, {nh, nw}); break;
    }
  }
  const std::int64_t pad_w = std::max<std::int64_t>(0, shape.width - nw), pad_h = std::max<std::int64_t>(0, shape.height - nh);
  if (pad_w > 0 || pad_h > 0) images = at::constant_pad_nd(images, {pad_w / 2, (pad_w + 1) / 2, pad_h / 2, (pad_h + 1) / 2}, 0.0);
  const auto top = static_cast<std::int64_t>(std::nearbyint(static_cast<double>(images.size(2) - shape.height) / 2.0));
  const auto left = static_cast<std::int64_t>(std::nearbyint(static_cast<double>(images.size(3) - shape.width) / 2.0));
  return images.slice(2, top, top + shape.height).slice(3, left, left + shape.width).contiguous();
}

}  // namespace

const char* interpolation_name(Interpolation i) {
  switch (i) {
    case Interpolation::Bilinear: return "bilinear";
    case Interpolation::Bicubic: return "bicubic";
    case Interpolation::Nearest: return "nearest";
  }
  return "?";
}

std::string InputShape::key() const {
  std::string k = std::to_string(channels) + "x" + std::to_string(height) + "x" + std::to_string(width);
  if (resize > 0) k += "/r" + std::to_string(resize) + "-" + interpolation_name(interpolation);
  return bgr ? k + "-bgr" : k;
}

at::Tensor fit_to_input(const at::Tensor& images_in, const InputShape& shape) {
  at::Tensor images = images_in;
  const auto c = images.size(1);
  if (c != shape.channels) {
    if (c == 3 && shape.channels == 1) {
      images = (images.select(1, 0) * 0.299 + images.select(1, 1) * 0.587 + images.select(1, 2) * 0.114).unsqueeze(1);
    } else if (c == 1) {
      images = images.expand({-1, shape.channels, -1, -1}).contiguous();
    } else {
      throw Error("cannot convert " + std::to_string(c) + "-channel images to " + std::to_string(shape.channels));
    }
  }
  if (shape.bgr && shape.channels == 3) images = images.flip({1});
  if (shape.resize > 0) return resize_and_center_crop(images, shape);
  const auto h = images.size(2), w = images.size(3);
  if (h == shape.height && w == shape.width) return images.contiguous();
  if (h >= shape.height && w >= shape.width) return at::adaptive_avg_pool2d(images, {shape.height, shape.width}).contiguous();
  return at::upsample_bilinear2d(images, {shape.height, shape.width}, false).clamp_(0.0, 1.0).contiguous();
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
