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
  Module conv(int in, int out, int kernel, int stride, int groups = 1) {
    Module m = module("Conv2d");
    const double std = std::sqrt(2.0 / (out / groups * kernel * kernel));
    m.register_parameter("weight", at::normal(0.0, std, {out, in / groups, kernel, kernel}, gen_), false);
    const int pad = kernel / 2;
    m.define("def forward(self, x):\n  return torch.conv2d(x, self.weight, None, [" + pair(stride) + "], [" +
             pair(pad) + "], [1, 1], " + std::to_string(groups) + ")\n");
    return m;
  }

  // conv -> BN (-> activation: "relu", "relu6" or ""), as torchvision's ConvBNActivation.
  Module conv_bn(int in, int out, int kernel, int stride, int groups, const std::string& activation) {
    Module m = module("ConvBN");
    m.register_module("conv", conv(in, out, kernel, stride, groups));
    m.register_module("bn", batch_norm(out));
    std::string body = "self.bn.forward(self.conv.forward(x))";
    if (activation == "relu") body = "torch.relu(" + body + ")";
    if (activation == "relu6") body = "torch.hardtanh(" + body + ", 0.0, 6.0)";
    m.define("def forward(self, x):\n  return " + body + "\n");
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

// Head shared by the zoo: global average pool, flatten, linear classifier.
namespace {
std::string head_code() {
  return "  x = torch.adaptive_avg_pool2d(x, [1, 1])\n  x = torch.flatten(x, 1)\n  return self.fc.forward(x)\n";
}

// The mobile networks' tail: a 1x1 conv-BN-activation to `last` channels, then the shared head.
void finish_mobile(Builder& b, Module& net, int in, int last, const std::string& activation, const std::string& body,
                   int num_classes) {
  net.register_module("last", b.conv_bn(in, last, 1, 1, 1, activation));
  net.register_module("fc", b.linear(last, num_classes));
  net.define("def forward(self, x):\n" + body + "  x = self.last.forward(x)\n" + head_code());
}
}  // namespace

torch::jit::Module make_vgg(const VggSpec& spec, std::uint64_t seed) {
  Builder b(seed);
  Module net = b.module("VGG");
  std::string body;
  int in = spec.in_channels, layer = 0;
  for (int stage = 0; stage < 3; ++stage) {
    const int out = spec.width << stage;
    for (int i = 0; i < 2; ++i, ++layer) {
      const std::string name = "features" + std::to_string(layer);
      net.register_module(name, b.conv_bn(in, out, 3, 1, 1, "relu"));
      body += "  x = self." + name + ".forward(x)\n";
      in = out;
    }
    if (stage < 2) body += "  x = torch.max_pool2d(x, [2, 2], [2, 2])\n";
  }
  net.register_module("fc", b.linear(in, spec.num_classes));
  net.define("def forward(self, x):\n" + body + head_code());
  return net;
}

torch::jit::Module make_mobilenet_v2(const MobileNetV2Spec& spec, std::uint64_t seed) {
  Builder b(seed);
  Module net = b.module("MobileNetV2");
  const int stem = spec.width;
  net.register_module("stem", b.conv_bn(spec.in_channels, stem, 3, 1, 1, "relu6"));
  std::string body = "  x = self.stem.forward(x)\n";
  // (expansion, channels as multiples of width, blocks, first stride)
  const int settings[][4] = {{1, 1, 1, 1}, {spec.expansion, 2, 2, 2}, {spec.expansion, 3, 2, 2}, {spec.expansion, 4, 2, 1}};
  int in = stem, index = 0;
  for (const auto& st : settings) {
    const int out = st[1] * spec.width;
    for (int i = 0; i < st[2]; ++i, ++index) {
      const int stride = i == 0 ? st[3] : 1, hidden = in * st[0];
      Module block = b.module("InvertedResidual");
      std::string code = "def forward(self, x):\n  y = x\n";
      if (st[0] != 1) {
        block.register_module("expand", b.conv_bn(in, hidden, 1, 1, 1, "relu6"));
        code += "  y = self.expand.forward(y)\n";
      }
      block.register_module("depthwise", b.conv_bn(hidden, hidden, 3, stride, hidden, "relu6"));
      block.register_module("project", b.conv_bn(hidden, out, 1, 1, 1, ""));
      code += "  y = self.project.forward(self.depthwise.forward(y))\n";
      code += (stride == 1 && in == out) ? "  return x + y\n" : "  return y\n";
      block.define(code);
      const std::string name = "features" + std::to_string(index);
      net.register_module(name, block);
      body += "  x = self." + name + ".forward(x)\n";
      in = out;
    }
  }
  finish_mobile(b, net, in, 8 * spec.width, "relu6", body, spec.num_classes);
  return net;
}

torch::jit::Module make_shufflenet_v2(const ShuffleNetV2Spec& spec, std::uint64_t seed) {
  Builder b(seed);
  Module net = b.module("ShuffleNetV2");
  const int stem = spec.width;
  net.register_module("stem", b.conv_bn(spec.in_channels, stem, 3, 1, 1, "relu"));
  std::string body = "  x = self.stem.forward(x)\n";
  // Channel shuffle with two groups, as torchvision's ShuffleNetV2 (view, transpose, view).
  const std::string shuffle =
      "  b, c, h, w = out.size()\n"
      "  out = out.view(b, 2, c // 2, h, w).transpose(1, 2).contiguous()\n"
      "  return out.view(b, c, h, w)\n";
  int in = stem, index = 0;
  for (int stage = 0; stage < 2; ++stage) {
    const int out = 2 * spec.width << stage, half = out / 2;
    for (int i = 0; i < 2; ++i, ++index) {
      Module unit = b.module("ShuffleUnit");
      if (i == 0) {  // stride 2: both branches see the whole input
        unit.register_module("branch1_dw", b.conv_bn(in, in, 3, 2, in, ""));
        unit.register_module("branch1_pw", b.conv_bn(in, half, 1, 1, 1, "relu"));
        unit.register_module("branch2_pw1", b.conv_bn(in, half, 1, 1, 1, "relu"));
        unit.register_module("branch2_dw", b.conv_bn(half, half, 3, 2, half, ""));
        unit.register_module("branch2_pw2", b.conv_bn(half, half, 1, 1, 1, "relu"));
        unit.define(
            "def forward(self, x):\n"
            "  a = self.branch1_pw.forward(self.branch1_dw.forward(x))\n"
            "  y = self.branch2_pw2.forward(self.branch2_dw.forward(self.branch2_pw1.forward(x)))\n"
            "  out = torch.cat([a, y], 1)\n" + shuffle);
      } else {  // stride 1: split channels, transform one half
        unit.register_module("branch2_pw1", b.conv_bn(half, half, 1, 1, 1, "relu"));
        unit.register_module("branch2_dw", b.conv_bn(half, half, 3, 1, half, ""));
        unit.register_module("branch2_pw2", b.conv_bn(half, half, 1, 1, 1, "relu"));
        unit.define(
            "def forward(self, x):\n"
            "  parts = x.chunk(2, 1)\n"
            "  y = self.branch2_pw2.forward(self.branch2_dw.forward(self.branch2_pw1.forward(parts[1])))\n"
            "  out = torch.cat([parts[0], y], 1)\n" + shuffle);
      }
      const std::string name = "stage" + std::to_string(stage + 2) + "_" + std::to_string(i);
      net.register_module(name, unit);
      body += "  x = self." + name + ".forward(x)\n";
      in = out;
    }
  }
  finish_mobile(b, net, in, 8 * spec.width, "relu", body, spec.num_classes);
  return net;
}

void set_input_normalization(torch::jit::Module& module, const std::vector<double>& mean,
                             const std::vector<double>& std) {
  auto list = c10::ListType::ofFloats();
  module.register_attribute("input_mean", list, c10::List<double>(mean));
  module.register_attribute("input_std", list, c10::List<double>(std));
}

}  // namespace xdq::zoo
