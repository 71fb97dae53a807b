// jpeg: JPEG compression artefacts at quality 80, 65, 58, 50, 40 (ImageNet-C).
#include <cmath>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "../common/image_transform.h"
#include "xdq/plugin/interfaces.h"

namespace {

class Transform : public xdq::DomainTransform {
 public:
  at::Tensor apply(const at::Tensor& images, int severity, std::uint64_t seed) const override {
    const int quality = xdq::transforms::at_severity<int>({80, 65, 58, 50, 40}, severity);
    return xdq::transforms::map_images(images, seed, [&](cv::Mat& img, cv::RNG&) {
      cv::Mat bytes8;
      img.convertTo(bytes8, CV_8U, 255.0);
      std::vector<uchar> buffer;
      cv::imencode(".jpg", bytes8, buffer, {cv::IMWRITE_JPEG_QUALITY, quality});
      cv::Mat decoded = cv::imdecode(buffer, bytes8.channels() == 1 ? cv::IMREAD_GRAYSCALE : cv::IMREAD_COLOR);
      decoded.convertTo(img, img.type(), 1.0 / 255.0);
    });
  }
};

xdq::OptionSchema schema() { return {}; }
xdq::Plugin* create(const xdq::Options&) { return new Transform(); }

}  // namespace

XDQ_PLUGIN(xdq::DomainTransform, "jpeg", "1.0.0", "JPEG compression", schema, create)
