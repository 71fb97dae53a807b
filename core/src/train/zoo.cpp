#include "xdq/train/zoo.h"

#include <cmath>

#include <ATen/ATen.h>
#include <torch/csrc/jit/api/compilation_unit.h>

#include "xdq/error.h"

namespace xdq::zoo {

namespace {

using torch::jit::Module;

// Every module gets its own (mangled) class so each can carry its own forward code.
class Builder {
 public:
  explicit Builder(std::uint64_t seed)
      : cu_(std::make_shared<torch::jit::CompilationUnit>()), gen_(at::detail::createCPUGenerator(seed)) {}

  Module module(const std::string& kind) {
    Module m(c10::QualifiedName("__torch__.xdq.zoo." + kind), cu_, /*shouldMangle=*/true);
    m.register_attribute("training", c10::BoolType::get(), true);
    return m;
  }

  // Kaiming-normal (fan_out, ReLU gain) as torchvision's ResNet initializes its convolutions.
  Module conv(int in, int out, int kernel, int stride) {
    Module m = module("Conv2d");
    const double std = std::sqrt(2.0 / (out * kernel * kernel));
    m.register_parameter("weight", at::normal(0.0, std, {out, in, kernel, kernel}, gen_), false);
    const int pad = kernel / 2;
    m.define("def forward(self, x):\n  return torch.conv2d(x, self.weight, None, [" + pair(stride) + "], [" +
             pair(pad) + "], [1, 1], 1)\n");
    return m;
  }

  Module batch_norm(int channels, double gamma = 1.0) {
    Module m = module("BatchNorm2d");
    m.register_parameter("weight", at::full({channels}, gamma), false);
    m.register_parameter("bias", at::zeros({channels}), false);
    m.register_buffer("running_mean", at::zeros({channels}));
    m.register_buffer("running_var", at::ones({channels}));
    m.define(
        "def forward(self, x):\n"
        "  return torch.batch_norm(x, self.weight, self.bias, self.running_mean, self.running_var,"
        " self.training, 0.1, 1e-05, True)\n");
    return m;
  }

  // PyTorch's nn.Linear default initialization: U(-1/sqrt(in), 1/sqrt(in)).
  Module linear(int in, int out) {
    Module m = module("Linear");
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    m.register_parameter("weight", at::empty({out, in}).uniform_(-bound, bound, gen_), false);
    m.register_parameter("bias", at::empty({out}).uniform_(-bound, bound, gen_), false);
    m.define("def forward(self, x):\n  return torch.linear(x, self.weight, self.bias)\n");
    return m;
  }

 private:
  static std::string pair(int v) { return std::to_string(v) + ", " + std::to_string(v); }
  std::shared_ptr<torch::jit::CompilationUnit> cu_;
  at::Generator gen_;
};

Module basic_block(Builder& b, int in, int out, int stride) {
  Module m = b.module("BasicBlock");
  m.register_module("conv1", b.conv(in, out, 3, stride));
  m.register_module("bn1", b.batch_norm(out));
  m.register_module("conv2", b.conv(out, out, 3, 1));
  // Zero-init of the last BN scale: each block starts as identity (Goyal et al. 2017), trains faster.
  m.register_module("bn2", b.batch_norm(out, 0.0));
  std::string shortcut = "x";
  if (stride != 1 || in != out) {
    Module down = b.module("Downsample");
    down.register_module("conv", b.conv(in, out, 1, stride));
    down.register_module("bn", b.batch_norm(out));
    down.define("def forward(self, x):\n  return self.bn.forward(self.conv.forward(x))\n");
    m.register_module("downsample", down);
    shortcut = "self.downsample.forward(x)";
  }
  m.define(
      "def forward(self, x):\n"
      "  out = torch.relu(self.bn1.forward(self.conv1.forward(x)))\n"
      "  out = self.bn2.forward(self.conv2.forward(out))\n"
      "  return torch.relu(out + " + shortcut + ")\n");
  return m;
}

}  // namespace

torch::jit::Module make_resnet(const ResNetSpec& spec, std::uint64_t seed) {
  if (spec.depth < 8 || (spec.depth - 2) % 6 != 0) throw Error("resnet depth must be 6n+2, got " + std::to_string(spec.depth));
  const int blocks = (spec.depth - 2) / 6;
  Builder b(seed);
  Module net = b.module("ResNet");
  net.register_module("conv1", b.conv(spec.in_channels, spec.width, 3, 1));
  net.register_module("bn1", b.batch_norm(spec.width));
  int in = spec.width;
  std::string body;
  for (int stage = 0; stage < 3; ++stage) {
    const int out = spec.width << stage;
    Module layer = b.module("Stage");
    std::string layer_body;
    for (int i = 0; i < blocks; ++i) {
      const std::string name = "block" + std::to_string(i);
      layer.register_module(name, basic_block(b, in, out, (stage > 0 && i == 0) ? 2 : 1));
      layer_body += "  x = self." + name + ".forward(x)\n";
      in = out;
    }
    layer.define("def forward(self, x):\n" + layer_body + "  return x\n");
    const std::string name = "layer" + std::to_string(stage + 1);
    net.register_module(name, layer);
    body += "  x = self." + name + ".forward(x)\n";
  }
  net.register_module("fc", b.linear(in, spec.num_classes));
  net.define(
      "def forward(self, x):\n"
      "  x = torch.relu(self.bn1.forward(self.conv1.forward(x)))\n" + body +
      "  x = torch.adaptive_avg_pool2d(x, [1, 1])\n"
      "  x = torch.flatten(x, 1)\n"
      "  return self.fc.forward(x)\n");
  return net;
}

void set_input_normalization(torch::jit::Module& module, const std::vector<double>& mean,
                             const std::vector<double>& std) {
  auto list = c10::ListType::ofFloats();
  module.register_attribute("input_mean", list, c10::List<double>(mean));
  module.register_attribute("input_std", list, c10::List<double>(std));
}

}  // namespace xdq::zoo
