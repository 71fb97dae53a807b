// Built instead of image_files.cpp when OpenCV is not available (e.g. accelerator machines): the
// image-file sources say so instead of failing to link.
#include "xdq/data/image_files.h"

#include "xdq/error.h"

namespace xdq {

namespace {
[[noreturn]] void unavailable(const char* what) {
  throw Error(std::string(what) + " needs OpenCV; this xdq was built without it (install libopencv-dev and rebuild)");
}
}  // namespace

Dataset load_opencv_digits(const std::string&, Split) { unavailable("opencv_digits"); }
Dataset natural_crops(const std::string&, std::int64_t, const InputShape&, std::uint64_t) { unavailable("natural"); }
ImageFileList list_image_folder(const std::string&, Split, const FolderOptions&) { unavailable("folder:"); }
at::Tensor decode_image_files(const std::vector<std::string>&, const at::Tensor&, const InputShape&, bool,
                              std::vector<bool>*) {
  unavailable("folder:");
}
Dataset load_image_files(const ImageFileList&, const at::Tensor&, const InputShape&, bool, std::vector<bool>*) {
  unavailable("folder:");
}
}  // namespace xdq
