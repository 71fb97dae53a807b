// motion_blur: a line kernel of length 3..11 pixels at a random angle per image.
#include <cmath>

#include <opencv2/imgproc.hpp>

#include "../common/image_transform.h"
#include "xdq/plugin/interfaces.h"

namespace {

class Transform : public xdq::DomainTransform {
 public:
  at::Tensor apply(const at::Tensor& images, int severity, std::uint64_t seed) const override {
    const int length = xdq::transforms::at_severity<int>({3, 5, 7, 9, 11}, severity);
    return xdq::transforms::map_images(images, seed, [&](cv::Mat& img, cv::RNG& rng) {
      cv::Mat kernel = cv::Mat::zeros(length, length, CV_32F);
      const double angle = rng.uniform(0.0, CV_PI);
      const double c = (length - 1) / 2.0;
      for (int t = 0; t < 4 * length; ++t) {
        const double r = (t / (4.0 * length - 1) - 0.5) * (length - 1);
        kernel.at<float>(cvRound(c + r * std::sin(angle)), cvRound(c + r * std::cos(angle))) = 1.0f;
      }
      kernel /= cv::sum(kernel)[0];
      cv::filter2D(img, img, -1, kernel, cv::Point(-1, -1), 0, cv::BORDER_REFLECT);
    });
  }
};

xdq::OptionSchema schema() { return {}; }
xdq::Plugin* create(const xdq::Options&) { return new Transform(); }

}  // namespace

XDQ_PLUGIN(xdq::DomainTransform, "motion_blur", "1.0.0", "motion blur", schema, create)
