#pragma once
// Shared by the domain-transform plugins: runs a per-image OpenCV function over a batch [N, C, H, W] in
// [0, 1], images in parallel (TBB), each with its own generator seeded from (seed, image index), so the
// result does not depend on scheduling. The function sees a CV_32FC(C) Mat it may modify in place.
#include <cstdint>
#include <functional>
#include <vector>

#include <ATen/ATen.h>
#include <opencv2/core.hpp>
#include <tbb/parallel_for.h>

#include "xdq/error.h"

namespace xdq::transforms {

// Severity 1..5 picks one entry of a five-value table.
template <class T>
T at_severity(const std::vector<T>& table, int severity) {
  if (severity < 1 || severity > 5) throw Error("severity must be in [1, 5], got " + std::to_string(severity));
  return table.at(static_cast<std::size_t>(severity - 1));
}

inline at::Tensor map_images(const at::Tensor& images, std::uint64_t seed,
                             const std::function<void(cv::Mat&, cv::RNG&)>& fn) {
  if (images.dim() != 4) throw Error("domain transforms expect images [N, C, H, W]");
  const at::Tensor src = images.to(at::kFloat).contiguous();
  at::Tensor out = at::empty_like(src);
  const int n = static_cast<int>(src.size(0)), c = static_cast<int>(src.size(1));
  const int h = static_cast<int>(src.size(2)), w = static_cast<int>(src.size(3));
  const float* in = src.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const std::size_t plane = static_cast<std::size_t>(h) * w;
  tbb::parallel_for(0, n, [&](int i) {
    cv::Mat image(h, w, CV_32FC(c));
    auto* px = image.ptr<float>();
    const float* from = in + static_cast<std::size_t>(i) * c * plane;
    for (int ch = 0; ch < c; ++ch)
      for (std::size_t p = 0; p < plane; ++p) px[p * c + ch] = from[ch * plane + p];
    cv::RNG rng(seed * 0x9E3779B97F4A7C15ULL + static_cast<std::uint64_t>(i) + 1);
    fn(image, rng);
    if (image.type() != CV_32FC(c) || image.rows != h || image.cols != w) throw Error("transform changed the image format");
    cv::min(cv::max(image, 0.0), 1.0, image);
    const auto* res = image.ptr<float>();
    float* to = dst + static_cast<std::size_t>(i) * c * plane;
    for (int ch = 0; ch < c; ++ch)
      for (std::size_t p = 0; p < plane; ++p) to[ch * plane + p] = res[p * c + ch];
  });
  return out;
}

}  // namespace xdq::transforms
