// gaussian_noise: additive N(0, s^2), s = 0.08..0.38 (ImageNet-C), clipped to [0, 1].
#include <cmath>

#include <opencv2/imgproc.hpp>

#include "../common/image_transform.h"
#include "xdq/plugin/interfaces.h"

namespace {

class Transform : public xdq::DomainTransform {
 public:
  at::Tensor apply(const at::Tensor& images, int severity, std::uint64_t seed) const override {
    const double sigma = xdq::transforms::at_severity<double>({0.08, 0.12, 0.18, 0.26, 0.38}, severity);
    return xdq::transforms::map_images(images, seed, [&](cv::Mat& img, cv::RNG& rng) {
      cv::Mat noise(img.size(), img.type());
      rng.fill(noise, cv::RNG::NORMAL, 0.0, sigma);
      img += noise;
    });
  }
};

xdq::OptionSchema schema() { return {}; }
xdq::Plugin* create(const xdq::Options&) { return new Transform(); }

}  // namespace

XDQ_PLUGIN(xdq::DomainTransform, "gaussian_noise", "1.0.0", "additive Gaussian noise", schema, create)
