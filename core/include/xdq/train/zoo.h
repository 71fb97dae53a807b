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

// Records the input normalization the model was trained with as module attributes
// (input_mean, input_std), which the importer reads back.
void set_input_normalization(torch::jit::Module& module, const std::vector<double>& mean,
                             const std::vector<double>& std);

}  // namespace xdq::zoo
