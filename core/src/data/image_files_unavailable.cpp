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
Dataset load_image_folder(const std::string&, const InputShape&) { unavailable("folder:"); }
bool image_output_available() { return false; }
std::string render_grid_png(const at::Tensor&, int, int) { unavailable("PNG output"); }
std::string render_heatmap_png(const std::string&, const std::vector<std::string>&, const std::vector<std::string>&,
                               const std::vector<std::vector<double>>&) {
  unavailable("PNG output");
}

std::string render_curves_png(const std::string&, const std::vector<std::string>&,
                              const std::vector<std::vector<std::pair<double, double>>>&, bool) {
  unavailable("PNG output");
}

std::string render_bars_png(const std::string&, const std::vector<std::string>&, const std::vector<std::string>&,
                            const std::vector<std::vector<double>>&) {
  unavailable("PNG output");
}

}  // namespace xdq
