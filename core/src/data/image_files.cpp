#include "xdq/data/image_files.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

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

namespace {

bool is_image_file(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp";
}

// Sorted class names; numerically when every name is an integer.
std::vector<std::string> sorted_class_folders(const fs::path& root) {
  std::vector<std::string> classes;
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory()) classes.push_back(e.path().filename().string());
  const bool numeric = !classes.empty() && std::all_of(classes.begin(), classes.end(), [](const std::string& c) {
    return !c.empty() && c.size() < 18 && std::all_of(c.begin(), c.end(), [](char ch) { return std::isdigit(static_cast<unsigned char>(ch)); });
  });
  std::sort(classes.begin(), classes.end(), [numeric](const std::string& a, const std::string& b) {
    return numeric ? std::stoll(a) < std::stoll(b) : a < b;
  });
  return classes;
}

// Class folder names in class-index order, from the classes file (checked against the folders present)
// or the sorted folders.
std::vector<std::string> class_names(const fs::path& root, const FolderOptions& options) {
  const std::vector<std::string> folders = sorted_class_folders(root);
  if (options.classes_file.empty()) return folders;
  std::vector<std::string> names;
  std::set<std::string> listed;
  std::ifstream in(options.classes_file);
  if (!in) throw Error(options.classes_file + ": cannot read the classes file");
  int line_no = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
    const std::string where = options.classes_file + ":" + std::to_string(line_no) + ": ";
    if (line.empty()) throw Error(where + "empty line (one class folder name per line, line k = class k)");
    if (!listed.insert(line).second) throw Error(where + "class '" + line + "' listed twice");
    names.push_back(line);
    if (!options.allow_missing_classes && !fs::is_directory(root / line))
      throw Error(where + "class '" + line + "' has no folder in " + root.string() +
                  " (set the domain's missing_classes: allow for a folder holding only some classes)");
  }
  for (const std::string& f : folders)
    if (!listed.count(f)) throw Error((root / f).string() + ": class folder not listed in " + options.classes_file);
  return names;
}

ImageFileList list_folder(const std::string& root_dir, Split split, const FolderOptions& options) {
  fs::path root = root_dir;
  if (!fs::is_directory(root)) throw Error(root_dir + ": image folder not found");
  // root/train + root/val (or test): the splits as given; otherwise a fixed hold-out of every fifth image.
  const fs::path test_dir = fs::is_directory(root / "val") ? root / "val" : root / "test";
  const bool split_folders = fs::is_directory(root / "train") && fs::is_directory(test_dir);
  if (split_folders) root = split == Split::Train ? root / "train" : test_dir;
  ImageFileList list{root.string(), {}, {}};
  const std::vector<std::string> classes = class_names(root, options);
  for (std::size_t label = 0; label < classes.size(); ++label) {
    const std::string& name = classes[label];
    if (!fs::is_directory(root / name)) continue;  // a listed class without a folder (allowed above)
    std::vector<std::string> in_class;
    for (const auto& e : fs::directory_iterator(root / name))
      if (e.is_regular_file() && is_image_file(e.path())) in_class.push_back(e.path().string());
    if (in_class.empty()) throw Error((root / name).string() + ": class folder holds no .png/.jpg/.jpeg/.bmp image");
    std::sort(in_class.begin(), in_class.end());
    for (std::size_t k = 0; k < in_class.size(); ++k)
      if (split_folders || (k % 5 == 4) == (split == Split::Test)) {
        list.files.push_back(in_class[k]);
        list.labels.push_back(static_cast<std::int64_t>(label));
      }
  }
  if (list.files.empty())
    throw Error(root.string() + ": image folder holds no images for the " + (split == Split::Train ? "train" : "test") +
                " split (expected <class>/<image>.png|jpg; without train/ and val/ folders every fifth image of a class is "
                "held out for testing, so a class needs 5 images to be tested)");
  return list;
}

}  // namespace

ImageFileList list_image_folder(const std::string& root_dir, Split split, const FolderOptions& options) {
  try {
    return list_folder(root_dir, split, options);
  } catch (const fs::filesystem_error& e) {  // a symbolic-link loop, a folder without read permission, ...
    throw Error(root_dir + ": cannot list the image folder (" + e.code().message() + ": " + e.path1().string() + ")");
  }
}

at::Tensor decode_image_files(const std::vector<std::string>& files, const at::Tensor& rows, const InputShape& shape,
                              bool skip_unreadable, std::vector<bool>* readable) {
  const std::int64_t* row = rows.data_ptr<std::int64_t>();
  const int flags = shape.channels == 1 ? cv::IMREAD_GRAYSCALE : cv::IMREAD_COLOR;
  std::vector<at::Tensor> images(static_cast<std::size_t>(rows.numel()));
  for_each_parallel(images.size(), [&](std::size_t i) {
    const std::string& file = files.at(static_cast<std::size_t>(row[i]));
    cv::Mat image;
    try {
      image = cv::imread(file, flags);
    } catch (const cv::Exception& e) {  // e.g. a header declaring more pixels than OpenCV decodes
      if (!skip_unreadable) throw Error(file + ": cannot decode image (OpenCV: " + e.err + " in " + e.func + ")");
    }
    if (image.empty()) {
      if (skip_unreadable) return;
      throw Error(file + ": cannot read image (not a PNG/JPEG/BMP file, or corrupt; the domain's unreadable: skip "
                         "leaves such files out)");
    }
    if (shape.resize > 0) {
      images[i] = fit_to_input(to_tensor(image).unsqueeze(0), shape).squeeze(0);
      return;
    }
    cv::Mat resized;
    cv::resize(image, resized, cv::Size(static_cast<int>(shape.width), static_cast<int>(shape.height)), 0, 0, cv::INTER_AREA);
    images[i] = fit_to_input(to_tensor(resized).unsqueeze(0), shape).squeeze(0);
  });
  if (readable) readable->assign(images.size(), true);
  std::vector<at::Tensor> kept;
  for (std::size_t i = 0; i < images.size(); ++i) {
    if (images[i].defined()) kept.push_back(images[i]);
    else if (readable) (*readable)[i] = false;
  }
  return kept.empty() ? at::empty({0, shape.channels, shape.height, shape.width}) : at::stack(kept);
}

Dataset load_image_files(const ImageFileList& list, const at::Tensor& rows, const InputShape& shape,
                         bool skip_unreadable, std::vector<bool>* readable) {
  std::vector<bool> kept;
  Dataset d{"folder", decode_image_files(list.files, rows, shape, skip_unreadable, &kept), {}};
  std::vector<std::int64_t> labels;
  const std::int64_t* row = rows.data_ptr<std::int64_t>();
  for (std::int64_t i = 0; i < rows.numel(); ++i)
    if (kept[static_cast<std::size_t>(i)]) labels.push_back(list.labels.at(static_cast<std::size_t>(row[i])));
  d.labels = at::tensor(labels, at::kLong);
  if (readable) *readable = std::move(kept);
  return d;
}

}  // namespace xdq
