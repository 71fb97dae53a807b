#include <opencv2/core.hpp>
#include <opencv2/dnn.hpp>

#include "xdq/error.h"
#include "xdq/export/runtime.h"

namespace xdq {

struct OpenCvRuntime::Impl {
  cv::dnn::Net net;
};

namespace {
// OpenCV's message without its source path: from "Node [...]" when it names the node.
std::string opencv_reason(const cv::Exception& e) {
  const std::string text = e.what();
  const std::size_t node = text.rfind("Node [");
  std::string reason = node != std::string::npos ? text.substr(node) : e.err;
  while (!reason.empty() && (reason.back() == '\n' || reason.back() == ' ')) reason.pop_back();
  return reason;
}
}  // namespace

OpenCvRuntime::OpenCvRuntime(const std::string& onnx_path) : impl_(std::make_shared<Impl>()) {
  try {
    impl_->net = cv::dnn::readNetFromONNX(onnx_path);
  } catch (const cv::Exception& e) {
    throw Error(onnx_path + ": OpenCV " + CV_VERSION + " cannot import it: " + opencv_reason(e));
  }
  impl_->net.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
  impl_->net.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
}

at::Tensor OpenCvRuntime::forward(const at::Tensor& input) {
  const at::Tensor x = input.to(at::kFloat).contiguous();
  std::vector<int> sizes(x.sizes().begin(), x.sizes().end());
  const cv::Mat blob(static_cast<int>(sizes.size()), sizes.data(), CV_32F, x.data_ptr<float>());
  cv::Mat out;
  try {
    impl_->net.setInput(blob);
    out = impl_->net.forward();
  } catch (const cv::Exception& e) {
    throw Error(std::string("OpenCV ") + CV_VERSION + " failed to run the model: " + opencv_reason(e));
  }
  std::vector<std::int64_t> shape;
  for (int d = 0; d < out.dims; ++d) shape.push_back(out.size[d]);
  return at::from_blob(out.ptr<float>(), shape, at::kFloat).clone();
}

std::vector<std::string> OpenCvRuntime::layer_types() const {
  std::vector<std::string> out;
  for (const auto& name : impl_->net.getLayerNames()) out.push_back(impl_->net.getLayer(name)->type);
  return out;
}

}  // namespace xdq
