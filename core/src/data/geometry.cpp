#include "xdq/data/geometry.h"

#include <algorithm>
#include <cmath>

#include "xdq/error.h"

namespace xdq {

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

}  // namespace xdq
