// Calibration data selection: each selector plugin (loaded from disk) on a small pool of real images and
// the shipped ResNet-20, checked against brute force computed here from activations read directly with
// Executor hooks (k-center's greedy and covering radius, the moment distance and its swap optimality,
// coverage gains, knowledge distances, max-min fair class shares); determinism by seed; bad configs and a
// plugin whose answer is invalid.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include <ATen/core/grad_mode.h>

#include "test_util.h"
#include "xdq/exec/executor.h"
#include "xdq/experiment/config.h"
#include "xdq/experiment/load.h"
#include "xdq/plugin/interfaces.h"
#include "xdq/select/selection.h"

using namespace xdq;
using namespace xdq::test;

namespace {

// 80 clean and 80 darkened (x 0.3) Fashion-MNIST test images; the darkened half is a shifted domain.
struct Pool {
  ImportedModel model = import_torchscript(std::string(XDQ_SOURCE_DIR) + "/models/resnet20_fmnist/model.pt");
  at::Tensor images;
  Pool() {
    const at::Tensor all = load_fashion_mnist(fashion_mnist_dir(), Split::Test).images.slice(0, 0, 240);
    images = at::cat({all.slice(0, 0, 80), all.slice(0, 80, 160) * 0.3});
  }
  SelectionContext context(std::int64_t count, std::uint64_t seed) const {
    SelectionContext c;
    c.graph = &model.graph;
    c.preprocess = model.preprocess;
    c.pool = images;
    c.count = count;
    c.seed = seed;
    c.batch_size = 64;  // the batches the reference activations below are computed in
    return c;
  }
  // The value each node reads first, captured over the pool in batches of 64 (hooks return it unchanged).
  std::map<int, at::Tensor> values(const std::vector<int>& wanted, const at::Tensor& x) const {
    Executor exec(model.graph);
    std::map<int, std::vector<at::Tensor>> parts;
    for (int v : wanted)
      exec.set_value_hook(v, [&parts, v](const at::Tensor& t) {
        parts[v].push_back(t.detach().to(at::kDouble));
        return t;
      });
    const at::NoGradGuard no_grad;
    for (std::int64_t b = 0; b < x.size(0); b += 64) exec.forward(model.preprocess.apply(x.slice(0, b, b + 64)));
    std::map<int, at::Tensor> out;
    for (auto& [v, list] : parts) out[v] = at::cat(list);
    return out;
  }
  std::vector<int> layer_inputs() const {
    std::vector<int> out;
    for (int n : model.graph.layer_nodes()) out.push_back(model.graph.nodes[n].inputs[0]);
    return out;
  }
};

const Pool& pool() {
  static const Pool p;
  return p;
}

Selection select_with(const std::string& name, const SelectionContext& context, const std::string& yaml = "{}") {
  const PluginRecord& r = built_plugins().get(PluginKind::Selector, name);
  const auto s = built_plugins().create<Selector>(name, validate_options(ConfigNode::parse(yaml, name + ".yaml"), r.options));
  return s->select(context);
}

void expect_valid(const Selection& s, std::int64_t count, std::int64_t pool_size) {
  ASSERT_EQ(static_cast<std::int64_t>(s.indices.size()), count);
  EXPECT_EQ(std::set<std::int64_t>(s.indices.begin(), s.indices.end()).size(), s.indices.size()) << "a row chosen twice";
  for (std::int64_t i : s.indices) EXPECT_TRUE(i >= 0 && i < pool_size) << i;
}

}  // namespace

TEST(Selection, KCenterIsTheBruteForceGreedyWithItsCoveringRadius) {
  const Pool& p = pool();
  const int penultimate = p.layer_inputs().back();
  const at::Tensor x = p.values({penultimate}, p.images).at(penultimate).flatten(1);
  const Selection s = select_with("kcenter", p.context(12, 3));
  expect_valid(s, 12, 160);
  // Greedy from the same first image, by explicit loops over pairs.
  std::vector<std::int64_t> expected{s.indices[0]};
  std::vector<double> nearest(160, INFINITY);
  for (int k = 0; k < 12; ++k) {
    for (std::int64_t i = 0; i < 160; ++i)
      nearest[i] = std::min(nearest[i], (x[i] - x[expected.back()]).pow(2).sum().item<double>());
    if (k + 1 < 12) expected.push_back(std::max_element(nearest.begin(), nearest.end()) - nearest.begin());
  }
  EXPECT_EQ(s.indices, expected);
  const double radius = std::sqrt(*std::max_element(nearest.begin(), nearest.end()));
  EXPECT_NEAR(s.measures.at("covering_radius"), radius, 1e-9 * radius);
}

TEST(Selection, BnMatchLowersTheMomentDistanceMonotonicallyToASwapOptimum) {
  const Pool& p = pool();
  const Graph& g = p.model.graph;
  std::vector<int> bn_nodes, inputs;
  for (std::size_t n = 0; n < g.nodes.size(); ++n)
    if (g.nodes[n].kind == OpKind::BatchNorm) {
      bn_nodes.push_back(static_cast<int>(n));
      inputs.push_back(g.nodes[n].inputs[0]);
    }
  ASSERT_GT(bn_nodes.size(), 10u);
  const auto values = p.values(inputs, p.images);
  // Per image: ((E[x] − μ)/σ, (E[x²] − μ² − σ²)/σ²) per channel, each BN scaled by 1/sqrt(2C).
  std::vector<at::Tensor> columns;
  for (std::size_t k = 0; k < bn_nodes.size(); ++k) {
    const at::Tensor x = values.at(inputs[k]);
    const at::Tensor mu = g.nodes[bn_nodes[k]].bn.mean.to(at::kDouble), var = g.nodes[bn_nodes[k]].bn.var.to(at::kDouble);
    const double scale = 1 / std::sqrt(2.0 * mu.size(0));
    columns.push_back((x.mean({2, 3}) - mu) / var.sqrt() * scale);
    columns.push_back((x.pow(2).mean({2, 3}) - mu.pow(2) - var) / var * scale);
  }
  const at::Tensor z = at::cat(columns, 1);
  const auto distance = [&](const std::vector<std::int64_t>& rows) {
    return z.index_select(0, at::tensor(rows, at::kLong)).mean(0).pow(2).sum().item<double>();
  };
  const Selection s = select_with("bn_match", p.context(16, 0), "{swap_rounds: 1000}");
  expect_valid(s, 16, 160);
  ASSERT_GE(s.trace.size(), 2u) << "no swap improved the greedy set";
  for (std::size_t k = 1; k < s.trace.size(); ++k) EXPECT_LT(s.trace[k], s.trace[k - 1]) << "step " << k;
  const double d = distance(s.indices);
  // float32 activations and features against double here: relative error a few 1e-6 at most.
  EXPECT_NEAR(s.trace.back(), d, 1e-4 * d);
  EXPECT_EQ(s.measures.at("swaps_converged"), 1);
  EXPECT_LT(d, s.measures.at("moment_distance_random"));
  // No single swap (one chosen image out, one other in) lowers the distance beyond float32 ranking noise.
  std::set<std::int64_t> chosen(s.indices.begin(), s.indices.end());
  for (std::size_t p_out = 0; p_out < s.indices.size(); ++p_out)
    for (std::int64_t in = 0; in < 160; ++in) {
      if (chosen.count(in)) continue;
      std::vector<std::int64_t> swapped = s.indices;
      swapped[p_out] = in;
      EXPECT_GE(distance(swapped), d * (1 - 1e-4)) << "swap " << s.indices[p_out] << " -> " << in;
    }
}

TEST(Selection, RangeCoverageTakesTheLargestGainEachStep) {
  const Pool& p = pool();
  const auto values = p.values(p.layer_inputs(), p.images);
  std::vector<at::Tensor> ratios, weights;  // per image and channel: max |x| / the pool's max; live channels weigh the same
  for (int v : p.layer_inputs()) {
    const at::Tensor x = values.at(v);
    const at::Tensor a = x.dim() == 4 ? x.abs().amax({2, 3}) : x.abs();
    const at::Tensor reach = a.amax(0), live = reach.gt(0).to(at::kDouble);
    ratios.push_back(at::where(reach.gt(0), a / reach, at::zeros_like(a)));
    weights.push_back(live / live.sum() / static_cast<double>(p.layer_inputs().size()));
  }
  const at::Tensor a = at::cat(ratios, 1), w = at::cat(weights);
  const Selection s = select_with("range_coverage", p.context(8, 0));
  expect_valid(s, 8, 160);
  at::Tensor covered = at::zeros({a.size(1)}, at::kDouble);
  const auto picks = static_cast<std::size_t>(s.measures.at("greedy_picks"));
  for (std::size_t k = 0; k < picks; ++k) {
    const at::Tensor gains = at::mv((a - covered).clamp_min(0), w);
    EXPECT_GE(gains[s.indices[k]].item<double>(), gains.max().item<double>() - 1e-6) << "pick " << k;
    covered = at::maximum(covered, a[s.indices[k]]);
  }
  for (std::size_t k = picks; k < s.indices.size(); ++k) covered = at::maximum(covered, a[s.indices[k]]);
  EXPECT_NEAR(s.measures.at("coverage"), at::dot(covered, w).item<double>(), 1e-5);
}

TEST(Selection, SelectQWithOneClusterTakesTheSmallestKnowledgeDistances) {
  const Pool& p = pool();
  const auto values = p.values(p.layer_inputs(), p.images);
  // One cluster: its centroid is the mean of the standardized statistics, i.e. 0.
  at::Tensor knowledge = at::zeros({160}, at::kDouble);
  for (int v : p.layer_inputs()) {
    const at::Tensor x = values.at(v);
    const at::Tensor m = x.dim() == 4 ? x.mean({2, 3}) : x;
    const at::Tensor d = ((m - m.mean(0)) / m.std(0, false).clamp_min(1e-12)).pow(2).sum(1).sqrt();
    knowledge += d / d.mean();
  }
  const at::Tensor order = knowledge.argsort();
  std::set<std::int64_t> expected;
  for (int k = 0; k < 10; ++k) expected.insert(order[k].item<std::int64_t>());
  const Selection s = select_with("selectq", p.context(10, 0), "{clusters: 1, iterations: 3}");
  expect_valid(s, 10, 160);
  EXPECT_EQ(std::set<std::int64_t>(s.indices.begin(), s.indices.end()), expected);
}

TEST(Selection, ClassBalancedSharesAreMaxMinFairOverPredictedClasses) {
  const Pool& p = pool();
  const int logits_value = p.model.graph.outputs[0];
  const at::Tensor predicted = p.values({logits_value}, p.images).at(logits_value).argmax(1);
  std::map<std::int64_t, std::int64_t> available;
  for (std::int64_t i = 0; i < 160; ++i) ++available[predicted[i].item<std::int64_t>()];
  for (std::int64_t count : {10, 37, 120}) {
    const Selection s = select_with("class_balanced", p.context(count, 1));
    expect_valid(s, count, 160);
    std::map<std::int64_t, std::int64_t> taken;
    for (std::int64_t i : s.indices) ++taken[predicted[i].item<std::int64_t>()];
    for (const auto& [c, q] : taken) EXPECT_LE(q, available[c]);
    // Max-min fair: a class below its availability holds at least every other class's share minus one.
    for (const auto& [a, n] : available)
      for (const auto& [b, m] : available)
        if (taken[a] < n) EXPECT_GE(taken[a], taken[b] - 1) << "count " << count << ", classes " << a << " and " << b;
  }
}

TEST(Selection, TargetMatchChoosesTheTargetDomain) {
  const Pool& p = pool();
  SelectionContext c = p.context(20, 0);
  c.target = load_fashion_mnist(fashion_mnist_dir(), Split::Test).images.slice(0, 300, 332) * 0.3;  // unseen dark images
  const Selection s = select_with("target_match", c);
  expect_valid(s, 20, 160);
  const auto dark = std::count_if(s.indices.begin(), s.indices.end(), [](std::int64_t i) { return i >= 80; });
  EXPECT_GE(dark, 18) << "of 20 chosen, from a pool half dark";
  EXPECT_LT(s.measures.at("moment_distance"), s.measures.at("moment_distance_random"));
  for (std::size_t k = 1; k < s.trace.size(); ++k) EXPECT_LT(s.trace[k], s.trace[k - 1]);
  c.target = at::Tensor();
  EXPECT_NE(error_of([&] { select_with("target_match", c); }).find("no target sample"), std::string::npos);
}

TEST(Selection, EverySelectorIsDeterministicBySeed) {
  const Pool& p = pool();
  for (const char* name : {"random", "class_balanced", "kcenter", "bn_match", "selectq", "range_coverage", "target_match"}) {
    SelectionContext c = p.context(12, 5);
    c.target = p.images.slice(0, 150, 160);
    const Selection a = select_with(name, c), b = select_with(name, c);
    expect_valid(a, 12, 160);
    EXPECT_EQ(a.indices, b.indices) << name;
  }
  EXPECT_NE(select_with("random", p.context(12, 5)).indices, select_with("random", p.context(12, 6)).indices);
}

// A pool streamed batch by batch (as a folder's files are decoded: fresh tensors, never a view of a whole
// set) is read exactly as the pool in memory: every selector makes the same choice with the same measures.
TEST(Selection, AStreamedPoolGivesTheInMemoryChoice) {
  const Pool& p = pool();
  const at::Tensor images = p.images;
  const CalibrationImages streamed(images.size(0), {images.size(1), images.size(2), images.size(3)},
                                   [images](std::int64_t batch, std::int64_t rows, const CalibrationImages::Visit& visit) {
                                     for (std::int64_t b = 0; b < rows; b += batch)
                                       visit(images.slice(0, b, std::min(rows, b + batch)).clone(), b);
                                   });
  ASSERT_TRUE(streamed.streamed());
  for (const char* name : {"random", "class_balanced", "kcenter", "bn_match", "selectq", "range_coverage", "target_match"}) {
    SelectionContext in_memory = p.context(12, 5);
    in_memory.target = p.images.slice(0, 150, 160);
    SelectionContext from_stream = in_memory;
    from_stream.pool = streamed;
    const Selection a = select_with(name, in_memory), b = select_with(name, from_stream);
    expect_valid(b, 12, 160);
    EXPECT_EQ(a.indices, b.indices) << name;
    EXPECT_EQ(a.measures, b.measures) << name;
  }
  // The chosen rows, gathered in one pass over the stream, are the pool's rows in the order asked.
  const std::vector<std::int64_t> rows{159, 0, 37, 36, 37};
  EXPECT_TRUE(at::equal(streamed.rows(rows), images.index_select(0, at::tensor(rows, at::kLong))));
}

namespace {
const char* kSelectionConfig = R"(experiment: selection
models:
  - {name: resnet20, path: )" XDQ_SOURCE_DIR R"(/models/resnet20_fmnist/model.pt}
domains:
  clean: {dataset: fashion_mnist}
  dark: {dataset: fashion_mnist, transforms: [{name: low_light, severity: 2}]}
  pool: {mix: {clean: 1, dark: 1}}
calibration:
  source: pool
  pool_size: 200
  count: 64
  selector: [random, kcenter]
test: {domains: [clean], count: 100}
quantization: {bits: [w4a4], calibrators: [minmax]}
)";
// The load error of the config with `from` replaced by `to` ("" when it loads).
std::string config_error(const std::string& from = "", const std::string& to = "") {
  std::string text = kSelectionConfig;
  if (!from.empty()) text.replace(text.find(from), from.size(), to);
  return error_of([&] { load_experiment_text(text, "sel.yaml", ".", {}, built_plugins()); });
}
}  // namespace

TEST(Selection, MalformedSelectionConfigsNameFileLineAndKey) {
  EXPECT_EQ(config_error(), "");
  EXPECT_EQ(config_error("count: 64", "count: [64, 500]"),
            "sel.yaml:11 calibration.count: a selector chooses 500 images from a pool of 200 (calibration.pool_size)");
  EXPECT_EQ(config_error("[random, kcenter]", "[random, target_match]"),
            "sel.yaml:12 calibration.selector[1]: selector 'target_match' needs a target sample: calibration.target_sample: {domain, count}");
  EXPECT_EQ(config_error("[random, kcenter]", "{name: kcenter, radius: 3}"),
            "sel.yaml:12 calibration.selector.radius: unknown key (allowed: name, label)");
  EXPECT_EQ(config_error("  selector: [random, kcenter]\n", "  selector: [random, kcenter]\n  target_sample: {domain: dark}\n"),
            "sel.yaml:13 calibration.target_sample: no calibration.selector reads a target sample (target_match does)");
  EXPECT_EQ(config_error("  selector: [random, kcenter]\n", "  selector: target_match\n  target_sample: {domain: dark, count: 0}\n"),
            "sel.yaml:13 calibration.target_sample.count: expected an integer in [1, 1000000], got 0");
  EXPECT_EQ(config_error("source: pool", "source: none"),
            "sel.yaml:9 calibration.source: calibration domain 'none' has no pool of real images for calibration.selector to choose from");
  const std::string unknown = config_error("[random, kcenter]", "[kcentre]");
  EXPECT_NE(unknown.find("sel.yaml:12 calibration.selector[0]"), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("kcenter"), std::string::npos) << unknown;  // the names that exist
}

TEST(Selection, AnInvalidSelectionIsRefusedNamingThePluginAndNothingIsWritten) {
  TempDir dir;
  for (const std::string outside : {"false", "true"}) {
    std::string config = kSelectionConfig;
    config.replace(config.find("[random, kcenter]"), 17, "{name: test_bad_selector, outside: " + outside + "}");
    config += "plugins: {paths: [" + std::string(XDQ_TEST_PLUGIN_DIR) + "]}\n";
    write_text(dir.file("sel.yaml"), config);
    const CommandResult r =
        run_command(std::string(XDQ_BINARY) + " run " + dir.file("sel.yaml") + " --out " + dir.file("out") + " --quiet");
    EXPECT_NE(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("plugin 'test_bad_selector' (" + std::string(XDQ_TEST_PLUGIN_DIR)), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(outside == "true" ? "of a pool of 200" : "twice"), std::string::npos) << r.output;
    EXPECT_FALSE(std::filesystem::exists(dir.file("out")));
  }
}

// A ViT's linear inputs on tokens: per image and per channel (the last dimension), whichever dimension the
// model keeps its images in ([N, T, C] for the MLP, [T, N, C] for the attention's input projection), the
// pool's last batch smaller than the others. Checked against the values themselves, read per image here;
// the attention output projections' inputs ([T * N, C]) merge images and tokens and are left out.
TEST(Selection, TokenFeaturesAreReadPerImageAndChannel) {
  const ImportedModel vit = import_torchscript(std::string(XDQ_TORCHVISION_DIR) + "/vit_tiny28.pt");
  const at::Tensor images = load_fashion_mnist(fashion_mnist_dir(), Split::Test).images.slice(0, 0, 37);
  SelectionContext context;
  context.graph = &vit.graph;
  context.preprocess = vit.preprocess;
  context.pool = images;
  context.batch_size = 16;  // batches of 16, 16, 5
  FeatureRequest request;
  request.layer_inputs = true;
  request.moments = false;
  request.absmax = true;
  const PoolFeatures f = image_features(context, images, request);
  std::map<std::string, int> input_of;
  for (int n : vit.graph.layer_nodes()) input_of[vit.graph.nodes[n].name] = vit.graph.nodes[n].inputs[0];
  const Executor exec(vit.graph);
  std::size_t compared = 0;
  for (std::int64_t i = 0; i < images.size(0); i += 9) {  // images 0, 9, 18, 27, 36, one at a time
    const std::vector<c10::IValue> values = exec.all_values(vit.preprocess.apply(images.slice(0, i, i + 1)));
    for (const SiteFeatures& s : f.layer_inputs) {
      const at::Tensor x = values.at(input_of.at(s.name)).toTensor();
      const at::Tensor channels = x.reshape({-1, x.size(-1)});  // one image: every row is a position
      const at::Tensor expected = x.dim() == 4 ? x.abs().amax({0, 2, 3}) : channels.abs().amax(0);
      ASSERT_EQ(s.absmax.size(0), images.size(0)) << s.name;
      EXPECT_TRUE(at::allclose(s.absmax[i], expected, 1e-5, 1e-6)) << s.name << " image " << i;
      ++compared;
    }
  }
  EXPECT_EQ(f.layer_inputs.size(), input_of.size() - 2);  // vit_tiny28: two attention output projections
  for (const SiteFeatures& s : f.layer_inputs) EXPECT_EQ(s.name.find("self_attention.linear1"), std::string::npos);
  EXPECT_GT(compared, 0u);
}
