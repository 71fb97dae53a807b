// invert: near-infrared-like intensity remapping, x' = (1 - a) x + a (1 - x), a = 0.2..1 over severities (5: full inversion).
#include <cmath>

#include <opencv2/imgproc.hpp>

#include "../common/image_transform.h"
#include "xdq/plugin/interfaces.h"

namespace {

class Transform : public xdq::DomainTransform {
 public:
  at::Tensor apply(const at::Tensor& images, int severity, std::uint64_t seed) const override {
    const double a = xdq::transforms::at_severity<double>({0.2, 0.4, 0.6, 0.8, 1.0}, severity);
    return xdq::transforms::map_images(images, seed, [&](cv::Mat& img, cv::RNG&) { img = img * (1.0 - 2.0 * a) + a; });
  }
};

xdq::OptionSchema schema() { return {}; }
xdq::Plugin* create(const xdq::Options&) { return new Transform(); }

}  // namespace

XDQ_PLUGIN(xdq::DomainTransform, "invert", "1.0.0", "NIR-like intensity inversion", schema, create)
