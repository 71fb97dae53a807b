// low_light: night-like images, x' = b * x^gamma (gamma 1.5..3.5, brightness 0.8..0.3 over severities 1..5).
#include <cmath>

#include <opencv2/imgproc.hpp>

#include "../common/image_transform.h"
#include "xdq/plugin/interfaces.h"

namespace {

class Transform : public xdq::DomainTransform {
 public:
  at::Tensor apply(const at::Tensor& images, int severity, std::uint64_t seed) const override {
    const double gamma = xdq::transforms::at_severity<double>({1.5, 2.0, 2.5, 3.0, 3.5}, severity);
    const double brightness = xdq::transforms::at_severity<double>({0.8, 0.65, 0.5, 0.4, 0.3}, severity);
    return xdq::transforms::map_images(images, seed, [&](cv::Mat& img, cv::RNG&) {
      cv::pow(img, gamma, img);
      img *= brightness;
    });
  }
};

xdq::OptionSchema schema() { return {}; }
xdq::Plugin* create(const xdq::Options&) { return new Transform(); }

}  // namespace

XDQ_PLUGIN(xdq::DomainTransform, "low_light", "1.0.0", "low light / night: gamma and brightness", schema, create)
