#pragma once
// Datasets a domain can be built from. Each has a train and a test split (sources without an official
// split define one deterministically; generated and unlabeled ones produce `count` images per request).
//   fashion_mnist   Debian's dataset-fashion-mnist, 60 000 / 10 000, 28x28, 10 classes
//   opencv_digits   opencv-doc's digits.png, 5 000 20x20 digits; per class the first 400 train, last 100 test
//   sklearn_digits  python3-sklearn's digits.csv.gz, 1 797 8x8 digits (another hand) in a 10x10 frame;
//                   both splits = all
//   natural         random grayscale crops of opencv-doc's photographs (unlabeled)
//   noise_gaussian  N(0.5, 0.25^2) pixels clipped to [0, 1] (unlabeled)
//   noise_uniform   U(0, 1) pixels (unlabeled)
//   folder:PATH     PATH/<class>/*.png|jpg (or PATH/train + PATH/val), labels from a classes file or the
//                   sorted sub-folder names; test splits are streamed (data/image_stream.h)
//   none            no images at all: data-free calibration (bn_ranges) and passes only
// "dataset.split" (e.g. fashion_mnist.train) names a dataset split directly.
#include <cstdint>
#include <string>
#include <vector>

#include "xdq/data/dataset.h"
#include "xdq/data/fashion_mnist.h"

namespace xdq {

struct DataLocations {
  std::string fashion_mnist;   // empty: $XDQ_FASHION_MNIST_DIR or the Debian package's folder
  std::string opencv_samples;  // empty: $XDQ_OPENCV_SAMPLES_DIR or opencv-doc's examples/data
  std::string sklearn_digits;  // empty: $XDQ_SKLEARN_DIGITS or python3-sklearn's digits.csv.gz
  std::string cache;           // synthesized sets; empty: $XDQ_CACHE_DIR or ~/.cache/xdq
};

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

const std::vector<std::string>& known_datasets();
bool is_known_dataset(const std::string& name);  // includes folder:PATH
bool is_labeled_dataset(const std::string& name);

// Options of a folder:PATH dataset (the domain's `classes`, `missing_classes` and `unreadable` keys).
struct FolderOptions {
  std::string classes_file;            // one class folder name per line, line k = class k; empty: sorted folders
  bool allow_missing_classes = false;  // a listed class may have no folder
  bool skip_unreadable = false;        // else an unreadable image file is an Error naming it
};

// Images fitted to `shape` (fit_to_input). `count` > 0 draws that many images, seeded (Dataset::subset);
// a folder then decodes only those.
Dataset load_dataset(const std::string& name, Split split, const DataLocations& where, const InputShape& shape,
                     std::int64_t count, std::uint64_t seed, const FolderOptions& folder = {});

// "fashion_mnist.train" -> (fashion_mnist, Train); false when `name` is not of that form.
bool parse_dataset_split(const std::string& name, std::string& dataset, Split& split);

// [N, C, H, W] in [0, 1] -> `shape`: channels (gray <-> RGB by luma / repeat, RGB -> BGR), then the
// geometry above.
at::Tensor fit_to_input(const at::Tensor& images, const InputShape& shape);

}  // namespace xdq
