#include "xdq/data/image_files.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "xdq/data/sources.h"
#include "xdq/error.h"
#include "xdq/parallel.h"

namespace xdq {

namespace fs = std::filesystem;

namespace {

cv::Mat read_image(const std::string& path, int flags) {
  cv::Mat m = cv::imread(path, flags);
  if (m.empty()) throw Error(path + ": cannot read image");
  return m;
}

// 8-bit Mat (gray or BGR) -> float [C, H, W] in [0, 1], RGB order.
at::Tensor to_tensor(const cv::Mat& m) {
  cv::Mat rgb;
  if (m.channels() == 3) cv::cvtColor(m, rgb, cv::COLOR_BGR2RGB);
  else rgb = m;
  cv::Mat f;
  rgb.convertTo(f, CV_32F, 1.0 / 255.0);
  at::Tensor t = at::from_blob(f.data, {f.rows, f.cols, f.channels()}, at::kFloat).clone();
  return t.permute({2, 0, 1}).contiguous();
}

}  // namespace

Dataset load_opencv_digits(const std::string& samples_dir, Split split) {
  const std::string path = (fs::path(samples_dir) / "digits.png").string();
  const cv::Mat sheet = read_image(path, cv::IMREAD_GRAYSCALE);
  if (sheet.cols != 2000 || sheet.rows != 1000) throw Error(path + ": expected a 2000x1000 sheet of 20x20 digits");
  std::vector<at::Tensor> images;
  std::vector<std::int64_t> labels;
  for (int digit = 0; digit < 10; ++digit)
    for (int k = 0; k < 500; ++k) {
      if ((k < 400) != (split == Split::Train)) continue;
      const int row = digit * 5 + k / 100, col = k % 100;
      images.push_back(to_tensor(sheet(cv::Rect(col * 20, row * 20, 20, 20)).clone()));
      labels.push_back(digit);
    }
  return Dataset{"opencv_digits", at::stack(images), at::tensor(labels)};
}

Dataset natural_crops(const std::string& samples_dir, std::int64_t count, const InputShape& shape, std::uint64_t seed) {
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(samples_dir, ec))
    if (e.path().extension() == ".jpg") files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  if (files.empty()) throw Error(samples_dir + ": no *.jpg photographs (install opencv-doc or set XDQ_OPENCV_SAMPLES_DIR)");
  std::vector<cv::Mat> photos(files.size());
  for_each_parallel(files.size(), [&](std::size_t i) { photos[i] = read_image(files[i], cv::IMREAD_GRAYSCALE); });
  cv::RNG rng(seed * 0x9E3779B97F4A7C15ULL + 1);
  std::vector<at::Tensor> crops;
  for (std::int64_t i = 0; i < count; ++i) {
    const cv::Mat& photo = photos[rng.uniform(0, static_cast<int>(photos.size()))];
    const int side_max = std::min(photo.rows, photo.cols);
    const int side = std::max(8, static_cast<int>(side_max * rng.uniform(0.1, 0.6)));
    const int x = rng.uniform(0, photo.cols - side + 1), y = rng.uniform(0, photo.rows - side + 1);
    cv::Mat crop;
    cv::resize(photo(cv::Rect(x, y, side, side)), crop, cv::Size(static_cast<int>(shape.width), static_cast<int>(shape.height)),
               0, 0, cv::INTER_AREA);
    crops.push_back(to_tensor(crop));
  }
  return Dataset{"natural", at::stack(crops), {}};
}

Dataset load_image_folder(const std::string& root, const InputShape& shape) {
  if (!fs::is_directory(root)) throw Error(root + ": image folder not found");
  std::vector<std::string> classes;
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory()) classes.push_back(e.path().filename().string());
  std::sort(classes.begin(), classes.end());
  std::vector<std::string> files;
  std::vector<std::int64_t> labels;
  for (std::size_t c = 0; c < classes.size(); ++c) {
    std::vector<std::string> in_class;
    for (const auto& e : fs::directory_iterator(fs::path(root) / classes[c])) {
      const std::string ext = e.path().extension().string();
      if (ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp") in_class.push_back(e.path().string());
    }
    std::sort(in_class.begin(), in_class.end());
    files.insert(files.end(), in_class.begin(), in_class.end());
    labels.insert(labels.end(), in_class.size(), static_cast<std::int64_t>(c));
  }
  const int flags = shape.channels == 1 ? cv::IMREAD_GRAYSCALE : cv::IMREAD_COLOR;
  std::vector<at::Tensor> images(files.size());
  for_each_parallel(files.size(), [&](std::size_t i) {
    cv::Mat resized;
    cv::resize(read_image(files[i], flags), resized, cv::Size(static_cast<int>(shape.width), static_cast<int>(shape.height)), 0,
               0, cv::INTER_AREA);
    images[i] = to_tensor(resized);
  });
  if (images.empty()) throw Error(root + ": image folder holds no images (expected <class>/<image>.png|jpg)");
  return Dataset{"folder", at::stack(images), at::tensor(labels)};
}

}  // namespace xdq
