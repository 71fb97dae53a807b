#include <algorithm>

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

namespace {
at::Tensor to_tensor(const cv::Mat& m) {
  std::vector<std::int64_t> shape;
  for (int d = 0; d < m.dims; ++d) shape.push_back(m.size[d]);
  return at::from_blob(const_cast<float*>(m.ptr<float>()), shape, at::kFloat).clone();
}
}  // namespace

at::Tensor OpenCvRuntime::forward(const at::Tensor& input) { return forward(input, {}).at(0); }

std::vector<at::Tensor> OpenCvRuntime::forward(const at::Tensor& input, const std::vector<std::string>& names) {
  const at::Tensor x = input.to(at::kFloat).contiguous();
  std::vector<int> sizes(x.sizes().begin(), x.sizes().end());
  const cv::Mat blob(static_cast<int>(sizes.size()), sizes.data(), CV_32F, x.data_ptr<float>());
  // OpenCV names the layer of an unnamed node after its output: "<prefix>!<tensor>" (4.6), or "<tensor>".
  std::vector<cv::String> layers;
  const std::vector<cv::String> all = impl_->net.getLayerNames();
  for (const std::string& name : names) {
    const auto it = std::find_if(all.begin(), all.end(), [&](const cv::String& l) {
      return l == name || (l.size() > name.size() && l.compare(l.size() - name.size(), name.size(), name) == 0 &&
                           l[l.size() - name.size() - 1] == '!');
    });
    if (it == all.end()) throw Error("OpenCV " + std::string(CV_VERSION) + " has no layer computing '" + name + "'");
    layers.push_back(*it);
  }
  std::vector<cv::Mat> outs;
  try {
    impl_->net.setInput(blob);
    if (names.empty()) outs = {impl_->net.forward()};
    else impl_->net.forward(outs, layers);
  } catch (const cv::Exception& e) {
    throw Error(std::string("OpenCV ") + CV_VERSION + " failed to run the model: " + opencv_reason(e));
  }
  std::vector<at::Tensor> result;
  for (const cv::Mat& m : outs) result.push_back(to_tensor(m));
  return result;
}

std::string OpenCvRuntime::name() const { return std::string("OpenCV ") + CV_VERSION; }

int OpenCvRuntime::int8_layers() const {
  const std::vector<std::string> types = layer_types();
  return static_cast<int>(std::count(types.begin(), types.end(), "ConvolutionInt8"));
}

std::vector<std::string> OpenCvRuntime::layer_types() const {
  std::vector<std::string> out;
  for (const auto& name : impl_->net.getLayerNames()) out.push_back(impl_->net.getLayer(name)->type);
  return out;
}

}  // namespace xdq
