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

// root/<class>/<image>, classes = sub-folder names sorted (numerically when all are integers, so 2 comes
// before 10) -> 0, 1, ...; each image resized to `shape`. Splits never share an image: root/train and
// root/val (or root/test) when both exist; otherwise, per class in file-name order, every fifth image is
// held out for the test split and the others are the train split.
Dataset load_image_folder(const std::string& root, const InputShape& shape, Split split);

}  // namespace xdq
