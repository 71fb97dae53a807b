// fog: smooth random haze (octaves of upsampled noise) added with strength a = 0.2..0.6, renormalized.
#include <cmath>

#include <opencv2/imgproc.hpp>

#include "../common/image_transform.h"
#include "xdq/plugin/interfaces.h"

namespace {

class Transform : public xdq::DomainTransform {
 public:
  at::Tensor apply(const at::Tensor& images, int severity, std::uint64_t seed) const override {
    const double a = xdq::transforms::at_severity<double>({0.2, 0.3, 0.4, 0.5, 0.6}, severity);
    return xdq::transforms::map_images(images, seed, [&](cv::Mat& img, cv::RNG& rng) {
      cv::Mat haze = cv::Mat::zeros(img.size(), CV_32F);
      double weight = 1.0, total = 0.0;
      for (int grid = 2; grid <= 16; grid *= 2, weight *= 0.5) {
        cv::Mat coarse(grid, grid, CV_32F), fine;
        rng.fill(coarse, cv::RNG::UNIFORM, 0.0, 1.0);
        cv::resize(coarse, fine, img.size(), 0, 0, cv::INTER_CUBIC);
        haze += fine * weight;
        total += weight;
      }
      haze /= total;
      std::vector<cv::Mat> channels(img.channels(), haze);
      cv::Mat haze_c;
      cv::merge(channels, haze_c);
      double max_value;
      cv::minMaxLoc(img.reshape(1), nullptr, &max_value);
      img = (img + haze_c * a) * (max_value / (max_value + a));
    });
  }
};

xdq::OptionSchema schema() { return {}; }
xdq::Plugin* create(const xdq::Options&) { return new Transform(); }

}  // namespace

XDQ_PLUGIN(xdq::DomainTransform, "fog", "1.0.0", "fog / haze", schema, create)
