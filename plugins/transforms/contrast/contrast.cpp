// contrast: x' = (x - mean) c + mean with c = 0.4..0.05 (ImageNet-C).
#include <cmath>

#include <opencv2/imgproc.hpp>

#include "../common/image_transform.h"
#include "xdq/plugin/interfaces.h"

namespace {

class Transform : public xdq::DomainTransform {
 public:
  at::Tensor apply(const at::Tensor& images, int severity, std::uint64_t seed) const override {
    const double c = xdq::transforms::at_severity<double>({0.4, 0.3, 0.2, 0.1, 0.05}, severity);
    return xdq::transforms::map_images(images, seed, [&](cv::Mat& img, cv::RNG&) {
      const cv::Scalar mean = cv::mean(img);
      img = (img - mean) * c + mean;
    });
  }
};

xdq::OptionSchema schema() { return {}; }
xdq::Plugin* create(const xdq::Options&) { return new Transform(); }

}  // namespace

XDQ_PLUGIN(xdq::DomainTransform, "contrast", "1.0.0", "contrast reduction", schema, create)
