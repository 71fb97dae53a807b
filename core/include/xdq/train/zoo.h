#pragma once
// Model zoo architectures, built directly as TorchScript modules (so a trained model is saved as an
// ordinary TorchScript file that torch.jit.load reads in Python, and xdq imports it like any user model).
// Module paths follow torchvision's conventions: conv1, bn1, layer1.block0.conv1, ..., fc.
#include <cstdint>
#include <string>
#include <vector>

#include <torch/csrc/jit/api/module.h>

namespace xdq::zoo {

struct ResNetSpec {
  int depth = 20;          // 6n + 2: n basic blocks per stage, three stages
  int width = 16;          // channels of the first stage; doubled per stage
  int in_channels = 1;
  int num_classes = 10;
};

// CIFAR-style ResNet (He et al. 2016) with 1x1-conv + BN shortcuts where the shape changes.
torch::jit::Module make_resnet(const ResNetSpec& spec, std::uint64_t seed);

// VGG-style with BN: three stages of two 3x3 conv-BN-ReLU (width, 2 width, 4 width), max pooling between.
struct VggSpec {
  int width = 16, in_channels = 1, num_classes = 10;
};
torch::jit::Module make_vgg(const VggSpec& spec, std::uint64_t seed);

// MobileNetV2-style: inverted residuals (1x1 expand, 3x3 depthwise, 1x1 project; ReLU6), sized for a CPU:
// stem `width`, stages of 1, 2, 3, 4 x width channels, last 1x1 conv to 8 x width.
struct MobileNetV2Spec {
  int width = 16, expansion = 4, in_channels = 1, num_classes = 10;
};
torch::jit::Module make_mobilenet_v2(const MobileNetV2Spec& spec, std::uint64_t seed);

// ShuffleNetV2-style: channel split, concatenation and channel shuffle; two stages of 2 and 4 x width.
struct ShuffleNetV2Spec {
  int width = 24, in_channels = 1, num_classes = 10;
};
torch::jit::Module make_shufflenet_v2(const ShuffleNetV2Spec& spec, std::uint64_t seed);

// Records the input normalization the model was trained with as module attributes
// (input_mean, input_std), which the importer reads back.
void set_input_normalization(torch::jit::Module& module, const std::vector<double>& mean,
                             const std::vector<double>& std);

}  // namespace xdq::zoo
