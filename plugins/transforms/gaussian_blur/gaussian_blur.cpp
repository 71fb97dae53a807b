// gaussian_blur: Gaussian blur with sigma 0.5..1.5 pixels (scaled from ImageNet-C to 28x28 inputs).
#include <cmath>

#include <opencv2/imgproc.hpp>

#include "../common/image_transform.h"
#include "xdq/plugin/interfaces.h"

namespace {

class Transform : public xdq::DomainTransform {
 public:
  at::Tensor apply(const at::Tensor& images, int severity, std::uint64_t seed) const override {
    const double sigma = xdq::transforms::at_severity<double>({0.5, 0.75, 1.0, 1.25, 1.5}, severity);
    return xdq::transforms::map_images(images, seed, [&](cv::Mat& img, cv::RNG&) {
      cv::GaussianBlur(img, img, cv::Size(0, 0), sigma, sigma, cv::BORDER_REFLECT);
    });
  }
};

xdq::OptionSchema schema() { return {}; }
xdq::Plugin* create(const xdq::Options&) { return new Transform(); }

}  // namespace

XDQ_PLUGIN(xdq::DomainTransform, "gaussian_blur", "1.0.0", "Gaussian blur", schema, create)
