// TorchScript import and the executor: structure of the imported graph, FP32 parity with the
// TorchScript module (max relative error <= 1e-5), differentiability, and clear import errors.
#include <fstream>
#include <set>

#include <gtest/gtest.h>
#include <torch/csrc/jit/serialization/import.h>

#include "test_util.h"
#include "xdq/exec/executor.h"
#include "xdq/ir/import.h"
#include "xdq/ir/passes.h"
#include "xdq/train/zoo.h"

using namespace xdq;

namespace {

// A zoo ResNet-20 with random BN statistics and affine parameters, saved as TorchScript.
std::string make_zoo_resnet(const test::TempDir& dir) {
  torch::jit::Module m = zoo::make_resnet({20, 16, 1, 10}, 7);
  at::manual_seed(7);
  for (const auto& p : m.named_parameters()) {
    if (p.value.dim() != 1 || p.name == "fc.bias") continue;
    const bool is_bias = p.name.size() > 5 && p.name.substr(p.name.size() - 5) == ".bias";
    p.value.copy_(is_bias ? at::randn_like(p.value) * 0.1 : at::rand_like(p.value) + 0.5);
  }
  for (const auto& b : m.named_buffers()) {
    const bool is_var = b.name.find("running_var") != std::string::npos;
    b.value.copy_(is_var ? at::rand_like(b.value) + 0.5 : at::randn_like(b.value) * 0.1);
  }
  zoo::set_input_normalization(m, {0.5}, {0.25});
  const std::string path = dir.file("resnet20.pt");
  m.save(path);
  return path;
}

at::Tensor holder_tensor(const std::string& path) { return torch::jit::load(path).attr("t").toTensor(); }

std::string import_error(const std::string& path) {
  try {
    import_torchscript(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Import, ZooResNetStructureAndNames) {
  test::TempDir dir;
  const ImportedModel m = import_torchscript(make_zoo_resnet(dir));
  const Graph& g = m.graph;
  ASSERT_EQ(g.layer_nodes().size(), 22u);  // 19 3x3 convs, 2 shortcut convs, fc
  EXPECT_EQ(g.nodes[g.layer_nodes().front()].name, "conv1");
  EXPECT_EQ(g.nodes[g.layer_nodes().back()].name, "fc");
  EXPECT_EQ(g.nodes[g.layer_nodes()[1]].name, "layer1.block0.conv1");
  EXPECT_EQ(conv_bn_pairs(g).size(), 21u);
  const auto blocks = find_residual_blocks(g);
  ASSERT_EQ(blocks.size(), 9u);
  EXPECT_EQ(blocks[0].name, "layer1.block0");
  EXPECT_EQ(blocks[3].name, "layer2.block0");
  EXPECT_EQ(blocks[3].layers.size(), 3u);  // conv1, conv2 and the downsample conv
  EXPECT_TRUE(m.has_preprocess);
  EXPECT_DOUBLE_EQ(m.preprocess.std[0], 0.25);
  // Parameter count: the module's own parameters (BN running statistics are buffers).
  int64_t expected = 0;
  for (const auto& p : torch::jit::load(m.path).parameters()) expected += p.numel();
  EXPECT_EQ(g.parameter_count(), expected);
}

TEST(Executor, ZooResNetMatchesTorchScriptAndFoldingKeepsIt) {
  test::TempDir dir;
  const std::string path = make_zoo_resnet(dir);
  torch::jit::Module module = torch::jit::load(path);
  module.eval();
  at::manual_seed(8);
  at::Tensor x = at::randn({4, 1, 28, 28});
  const at::Tensor expected = module.forward({x}).toTensor();
  const ImportedModel m = import_torchscript(path);
  EXPECT_LE(test::max_relative_error(Executor(m.graph).forward(x), expected), 1e-5);
  Graph folded = m.graph;
  EXPECT_EQ(fold_batch_norm(folded), 21);
  EXPECT_LE(test::max_relative_error(Executor(folded).forward(x), expected), 1e-4);
}

TEST(Import, ZooArchitecturesMatchTorchScriptWithTheirStructure) {
  test::TempDir dir;
  struct Case {
    std::string name;
    torch::jit::Module module;
    std::size_t residual_blocks, concats;
  };
  std::vector<Case> cases = {{"vgg", zoo::make_vgg({8, 1, 10}, 3), 0, 0},
                             {"mobilenet_v2", zoo::make_mobilenet_v2({8, 4, 1, 10}, 3), 4, 0},
                             {"shufflenet_v2", zoo::make_shufflenet_v2({8, 1, 10}, 3), 0, 4}};
  at::manual_seed(10);
  const at::Tensor x = at::randn({3, 1, 28, 28});
  for (auto& c : cases) {
    c.module.eval();
    const at::Tensor expected = c.module.forward({x}).toTensor();
    c.module.save(dir.file(c.name + ".pt"));
    const ImportedModel m = import_torchscript(dir.file(c.name + ".pt"));
    EXPECT_LE(test::max_relative_error(Executor(m.graph).forward(x), expected), 1e-5) << c.name;
    EXPECT_EQ(find_residual_blocks(m.graph).size(), c.residual_blocks) << c.name;
    std::size_t concats = 0;
    for (int n : merge_nodes(m.graph)) concats += m.graph.nodes[n].op == "aten::cat";
    EXPECT_EQ(concats, c.concats) << c.name;
    int depthwise = 0;
    for (int n : m.graph.layer_nodes()) depthwise += m.graph.nodes[n].is_depthwise();
    EXPECT_EQ(depthwise > 0, c.name != "vgg") << c.name;
  }
}

TEST(Executor, GradientsFlowToInputsAndInstalledWeights) {
  test::TempDir dir;
  const std::string path = make_zoo_resnet(dir);
  torch::jit::Module module = torch::jit::load(path);
  module.eval();
  at::manual_seed(9);
  at::Tensor x1 = at::randn({2, 1, 28, 28}).requires_grad_(true);
  at::Tensor x2 = x1.detach().clone().requires_grad_(true);
  module.forward({x1}).toTensor().square().sum().backward();
  Executor exec(import_torchscript(path).graph);
  // A weight installed as a function of a leaf: the gradient reaches the leaf.
  const int fc = exec.graph().layer_nodes().back();
  at::Tensor fc_weight = exec.graph().nodes[fc].weight.detach().clone().requires_grad_(true);
  exec.set_weight(fc, fc_weight * 1.0);
  exec.forward(x2).square().sum().backward();
  EXPECT_LE(test::max_relative_error(x2.grad(), x1.grad()), 1e-4);
  ASSERT_TRUE(fc_weight.grad().defined());
  EXPECT_GT(fc_weight.grad().abs().sum().item<double>(), 0.0);
}

TEST(Executor, ValueHooksSeeAndReplaceValues) {
  test::TempDir dir;
  Executor exec(import_torchscript(make_zoo_resnet(dir)).graph);
  const int fc = exec.graph().layer_nodes().back();
  const int fc_input = exec.graph().nodes[fc].inputs[0];
  at::Tensor seen;
  exec.set_value_hook(fc_input, [&](const at::Tensor& v) {
    seen = v;
    return at::zeros_like(v);
  });
  at::Tensor y = exec.forward(at::randn({3, 1, 28, 28}));
  EXPECT_EQ(seen.sizes(), (std::vector<int64_t>{3, 64}));
  // With a zero input the fc outputs its bias.
  EXPECT_TRUE(at::allclose(y, exec.graph().nodes[fc].bias.expand({3, 10})));
}

TEST(Import, TorchvisionModelsMatchTorchScript) {
  const std::string dir = XDQ_TORCHVISION_DIR;
  std::ifstream manifest(dir + "/manifest.txt");
  ASSERT_TRUE(manifest) << "fixture missing: " << dir << " (ctest runs make_torchvision_models first)";
  int count = 0;
  for (std::string name; std::getline(manifest, name);) {
    if (name.empty()) continue;
    const ImportedModel m = import_torchscript(dir + "/" + name + ".pt");
    const at::Tensor x = holder_tensor(dir + "/" + name + ".input.pt");
    const at::Tensor expected = holder_tensor(dir + "/" + name + ".output.pt");
    EXPECT_LE(test::max_relative_error(Executor(m.graph).forward(x), expected), 1e-5) << name;
    Graph folded = m.graph;
    fold_batch_norm(folded);
    EXPECT_LE(test::max_relative_error(Executor(folded).forward(x), expected), 1e-4) << name << " (BN folded)";
    EXPECT_GT(m.graph.layer_nodes().size(), 5u) << name;
    std::set<std::string> layer_names;  // overrides, reports and reconstruction units name layers
    for (int l : m.graph.layer_nodes()) EXPECT_TRUE(layer_names.insert(m.graph.nodes[l].name).second) << name << ": " << m.graph.nodes[l].name;
    // Channels-last: other kernels, the same function within float32 rounding.
    Graph nhwc = m.graph;
    nhwc.channels_last = true;
    EXPECT_LE(test::max_relative_error(Executor(nhwc).forward(x), expected), 1e-4) << name << " (channels-last)";
    ++count;
  }
  EXPECT_EQ(count, 18);
}

// A DeiT-style encoder: per block, the attention's input and output projections (functional linears in the
// attention module's scope, numbered apart) and the MLP's two linears; each block's attention and MLP are
// the residual units reconstruction works on.
TEST(Import, VisionTransformerLayersAndResidualUnits) {
  const ImportedModel m = import_torchscript(std::string(XDQ_TORCHVISION_DIR) + "/deit_tiny.pt");
  std::vector<std::string> names;
  for (int l : m.graph.layer_nodes()) names.push_back(m.graph.nodes[l].name);
  ASSERT_EQ(names.size(), 2u + 12u * 4u);  // patch embedding, 12 x (qkv, proj, fc1, fc2), head
  EXPECT_EQ(names[0], "conv_proj");
  EXPECT_EQ(names[1], "encoder.layers.encoder_layer_0.self_attention.linear0");
  EXPECT_EQ(names[2], "encoder.layers.encoder_layer_0.self_attention.linear1");
  EXPECT_EQ(names[3], "encoder.layers.encoder_layer_0.mlp.0");
  EXPECT_EQ(m.graph.nodes[m.graph.layer_nodes()[1]].weight.sizes(), (std::vector<std::int64_t>{3 * 192, 192}));
  const auto blocks = find_residual_blocks(m.graph);
  ASSERT_EQ(blocks.size(), 24u);
  for (std::size_t b = 0; b < blocks.size(); ++b) {
    ASSERT_EQ(blocks[b].layers.size(), 2u) << blocks[b].name;
    EXPECT_EQ(m.graph.nodes[blocks[b].layers[0]].name, names[1 + 2 * b]) << b;
  }
  EXPECT_EQ(blocks[0].name, "encoder.layers.encoder_layer_0.self_attention");
  EXPECT_EQ(blocks[1].name, "encoder.layers.encoder_layer_0.mlp");
}

TEST(Import, UnsupportedOperatorNamesKindModuleAndSource) {
  test::TempDir dir;
  torch::jit::Module m("__torch__.Sorter");
  m.register_attribute("training", c10::BoolType::get(), false);
  m.define("def forward(self, x):\n  return torch.cumsum(x, 1)\n");
  m.save(dir.file("sorter.pt"));
  const std::string e = import_error(dir.file("sorter.pt"));
  EXPECT_NE(e.find(dir.file("sorter.pt")), std::string::npos) << e;
  EXPECT_NE(e.find("unsupported operator aten::cumsum"), std::string::npos) << e;
}

TEST(Import, NonTorchScriptAndMissingFiles) {
  test::TempDir dir;
  test::write_text(dir.file("junk.pt"), "definitely not a zip archive");
  EXPECT_NE(import_error(dir.file("junk.pt")).find("not a TorchScript file"), std::string::npos);
  EXPECT_NE(import_error(dir.file("absent.pt")).find("model file not found"), std::string::npos);
}
