#pragma once
// The input geometry a loader delivers (channels, size, resize and crop, channel order) and the function
// that fits images to it.
#include <cstdint>
#include <string>

#include <ATen/ATen.h>

namespace xdq {

enum class Interpolation { Bilinear, Bicubic, Nearest };
const char* interpolation_name(Interpolation i);  // "bilinear", "bicubic", "nearest"

// What a loader delivers: channels x height x width images in [0, 1], RGB (or BGR) order. With
// `resize` > 0 an image is first resized so that its shorter side is `resize` (the longer one truncated,
// as torchvision's Resize(int)) with `interpolation` (antialiased when downscaling, LibTorch's own
// kernels), then center-cropped to height x width (zero-padded where smaller); with `resize` = 0 it is
// resized straight to height x width (area downscaling, bilinear upscaling).
struct InputShape {
  std::int64_t channels = 1, height = 28, width = 28;
  std::int64_t resize = 0;
  Interpolation interpolation = Interpolation::Bilinear;
  bool bgr = false;
  // "3x224x224", with "/r256-bilinear" (and "-bgr") when resized: keys caches of loaded and synthesized sets.
  std::string key() const;
};

// [N, C, H, W] in [0, 1] -> `shape`: channels (gray <-> RGB by luma / repeat, RGB -> BGR), then the
// geometry above.
at::Tensor fit_to_input(const at::Tensor& images, const InputShape& shape);

}  // namespace xdq
