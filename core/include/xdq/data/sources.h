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
//                   sorted sub-folder names; test splits and calibration sets
//                   are streamed (data/test_images.h)
//   none            no images at all: data-free calibration (bn_ranges) and passes only
// "dataset.split" (e.g. fashion_mnist.train) names a dataset split directly.
#include <cstdint>
#include <string>
#include <vector>

#include "xdq/data/dataset.h"
#include "xdq/data/fashion_mnist.h"
#include "xdq/data/geometry.h"
#include "xdq/data/image_files.h"

namespace xdq {

struct DataLocations {
  std::string fashion_mnist;   // empty: $XDQ_FASHION_MNIST_DIR or the Debian package's folder
  std::string opencv_samples;  // empty: $XDQ_OPENCV_SAMPLES_DIR or opencv-doc's examples/data
  std::string sklearn_digits;  // empty: $XDQ_SKLEARN_DIGITS or python3-sklearn's digits.csv.gz
  std::string cache;           // synthesized sets; empty: $XDQ_CACHE_DIR or ~/.cache/xdq
};

const std::vector<std::string>& known_datasets();
bool is_known_dataset(const std::string& name);  // includes folder:PATH
bool is_labeled_dataset(const std::string& name);

// Images fitted to `shape` (fit_to_input). `count` > 0 draws that many images, seeded (Dataset::subset);
// a folder then decodes only those.
Dataset load_dataset(const std::string& name, Split split, const DataLocations& where, const InputShape& shape,
                     std::int64_t count, std::uint64_t seed, const FolderOptions& folder = {});

// "fashion_mnist.train" -> (fashion_mnist, Train); false when `name` is not of that form.
bool parse_dataset_split(const std::string& name, std::string& dataset, Split& split);

}  // namespace xdq
