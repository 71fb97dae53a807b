// Built instead of png.cpp when OpenCV is not available (e.g. accelerator machines): reports carry
// their tables and say that pictures need OpenCV.
#include "xdq/report/png.h"

#include "xdq/error.h"

namespace xdq {

namespace {
[[noreturn]] void unavailable(const char* what) {
  throw Error(std::string(what) + " needs OpenCV; this xdq was built without it (install libopencv-dev and rebuild)");
}
}  // namespace

bool image_output_available() { return false; }
std::string render_grid_png(const at::Tensor&, int, int) { unavailable("PNG output"); }
std::string render_heatmap_png(const std::string&, const std::vector<std::string>&, const std::vector<std::string>&,
                               const std::vector<std::vector<double>>&) {
  unavailable("PNG output");
}

std::string render_curves_png(const std::string&, const std::vector<std::string>&,
                              const std::vector<std::vector<std::pair<double, double>>>&, bool, bool) {
  unavailable("PNG output");
}

std::string render_bars_png(const std::string&, const std::vector<std::string>&, const std::vector<std::string>&,
                            const std::vector<std::vector<double>>&) {
  unavailable("PNG output");
}

}  // namespace xdq
