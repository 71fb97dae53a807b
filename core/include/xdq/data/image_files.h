#pragma once
// Image-file sources (OpenCV): opencv-doc's digits and photographs, and user image folders.
// In a build without OpenCV these throw an Error saying so.
#include <cstdint>
#include <string>
#include <vector>

#include "xdq/data/dataset.h"
#include "xdq/data/fashion_mnist.h"
#include "xdq/data/geometry.h"

namespace xdq {

// Options of a folder:PATH dataset (the domain's `classes`, `missing_classes` and `unreadable` keys).
struct FolderOptions {
  std::string classes_file;            // one class folder name per line, line k = class k; empty: sorted folders
  bool allow_missing_classes = false;  // a listed class may have no folder
  bool skip_unreadable = false;        // else an unreadable image file is an Error naming it
};

// digits.png: 2000x1000, 20x20 cells, 100 per row, 5 rows per class; per class the first 400 cells
// (row-major) are the train split, the last 100 the test split.
Dataset load_opencv_digits(const std::string& samples_dir, Split split);

// `count` random square grayscale crops (10-60 % of the shorter side) of the *.jpg photographs in
// `samples_dir`, resized to `shape`, seeded.
Dataset natural_crops(const std::string& samples_dir, std::int64_t count, const InputShape& shape, std::uint64_t seed);

// The image files of one split of root/<class>/<image>.png|jpg|jpeg|bmp (any case), labelled by class.
// Splits never share an image: root/train and root/val (or root/test) when both exist; otherwise, per
// class in file-name order, every fifth image is held out for the test split and the others are the
// train split. Classes: the lines of options.classes_file (line k = class k), else the sub-folder names
// sorted (numerically when all are integers, so 2 comes before 10). Errors name the file or folder: an
// empty class folder, a class folder the classes file does not list, a listed class without a folder
// (unless options.allow_missing_classes: a folder holding only some of the model's classes). Nothing is
// decoded.
struct ImageFileList {
  std::string root;  // the split's folder
  std::vector<std::string> files;
  std::vector<std::int64_t> labels;
};
ImageFileList list_image_folder(const std::string& root, Split split, const FolderOptions& options);

// files[rows[i]] decoded and fitted to `shape` (fit_to_input; without shape.resize, OpenCV's area
// resize straight to the input size) on all cores: [n, C, H, W] in [0, 1]. An unreadable file is an Error
// naming it; with `skip_unreadable` it is left out and `readable` (when given) says which rows were kept.
at::Tensor decode_image_files(const std::vector<std::string>& files, const at::Tensor& rows, const InputShape& shape,
                              bool skip_unreadable, std::vector<bool>* readable = nullptr);

// The rows of `list` (subset_rows) decoded, with their labels; `readable` as in decode_image_files.
Dataset load_image_files(const ImageFileList& list, const at::Tensor& rows, const InputShape& shape,
                         bool skip_unreadable, std::vector<bool>* readable = nullptr);

}  // namespace xdq
