// Data sources and domain-transform plugins, each against an independent computation.
#include <cmath>
#include <fstream>

#include <gtest/gtest.h>

#include "test_util.h"
#include "xdq/data/image_files.h"
#include "xdq/report/png.h"
#include "xdq/data/sources.h"
#include "xdq/plugin/registry.h"

using namespace xdq;

namespace {

PluginRegistry& registry() { return test::built_plugins(); }

at::Tensor transform(const std::string& name, const at::Tensor& x, int severity, std::uint64_t seed = 1) {
  auto t = registry().create<DomainTransform>(name, Options());
  return t->apply(x, severity, seed);
}

at::Tensor mid_gray(std::int64_t n = 4) { return at::full({n, 1, 28, 28}, 0.5f); }

void write_png(const std::string& path, const at::Tensor& image) {
  std::ofstream(path, std::ios::binary) << render_grid_png(image.unsqueeze(0), 1, 1);
}

}  // namespace

TEST(Sources, OpencvDigitsSplitPerClass) {
  const DataLocations where;
  const Dataset train = load_dataset("opencv_digits", Split::Train, where, {1, 20, 20}, 0, 0);
  const Dataset test = load_dataset("opencv_digits", Split::Test, where, {1, 20, 20}, 0, 0);
  EXPECT_EQ(train.size(), 4000);
  EXPECT_EQ(test.size(), 1000);
  EXPECT_TRUE(at::bincount(test.labels).eq(100).all().item<bool>());
  EXPECT_EQ(test.labels[0].item<int64_t>(), 0);
  EXPECT_EQ(test.labels[999].item<int64_t>(), 9);
  // Digits are bright strokes on black: the border is dark, the center has ink.
  EXPECT_LT(train.images.select(3, 0).mean().item<float>(), 0.05f);
  EXPECT_GT(train.images.mean().item<float>(), 0.05f);
}

TEST(Sources, SklearnDigitsValuesAndResize) {
  const Dataset d = load_dataset("sklearn_digits", Split::Test, DataLocations(), {1, 10, 10}, 0, 0);
  ASSERT_EQ(d.size(), 1797);
  // First digit of the file: a 0 whose first row is 0,0,5,13,9,1,0,0 (values / 16), inside a 1-pixel margin.
  EXPECT_EQ(d.labels[0].item<int64_t>(), 0);
  EXPECT_FLOAT_EQ(d.images[0][0][1][4].item<float>(), 13.0f / 16.0f);
  EXPECT_FLOAT_EQ(d.images.select(2, 0).abs().sum().item<float>(), 0.0f);
  const Dataset big = load_dataset("sklearn_digits", Split::Test, DataLocations(), {1, 28, 28}, 0, 0);
  EXPECT_EQ(big.images.size(3), 28);
}

TEST(Sources, GeneratedSourcesAreSeededAndUnlabeled) {
  const DataLocations where;
  const Dataset a = load_dataset("noise_gaussian", Split::Train, where, {1, 28, 28}, 64, 5);
  const Dataset b = load_dataset("noise_gaussian", Split::Train, where, {1, 28, 28}, 64, 5);
  const Dataset c = load_dataset("noise_gaussian", Split::Train, where, {1, 28, 28}, 64, 6);
  EXPECT_TRUE(a.images.equal(b.images));
  EXPECT_FALSE(a.images.equal(c.images));
  EXPECT_FALSE(a.labeled());
  EXPECT_NEAR(a.images.mean().item<float>(), 0.5f, 0.01f);
  const Dataset n = load_dataset("natural", Split::Train, where, {1, 28, 28}, 32, 5);
  EXPECT_EQ(n.size(), 32);
  EXPECT_TRUE(n.images.equal(load_dataset("natural", Split::Train, where, {1, 28, 28}, 32, 5).images));
  EXPECT_GT(n.images.std().item<float>(), 0.05f);
}

// A folder's splits never share an image: every fifth image of a class (file-name order) is held out for
// testing; train/ and val/ sub-folders are used as given. Integer class names sort numerically.
TEST(Sources, ImageFolderSplitsAreDisjointAndClassesSortNumerically) {
  test::TempDir dir;
  for (const char* cls : {"10", "2"}) std::filesystem::create_directories(dir.path() / cls);
  for (int k = 0; k < 10; ++k) {
    write_png(dir.file("2/" + std::to_string(k) + ".png"), at::full({1, 10, 10}, k / 10.0f));
    if (k < 6) write_png(dir.file("10/" + std::to_string(k) + ".png"), at::full({1, 10, 10}, 1.0f));
  }
  const std::string folder = "folder:" + dir.path().string();
  const Dataset train = load_dataset(folder, Split::Train, DataLocations(), {1, 5, 5}, 0, 0);
  const Dataset test = load_dataset(folder, Split::Test, DataLocations(), {1, 5, 5}, 0, 0);
  // Class "2" (label 0): files 0..9, held out 4 and 9; class "10" (label 1): files 0..5, held out 4.
  ASSERT_EQ(test.size(), 3);
  EXPECT_TRUE(test.labels.equal(at::tensor({0L, 0L, 1L})));
  EXPECT_NEAR(test.images[0].mean().item<float>(), 0.4f, 1.0 / 255);  // 8-bit PNG pixels
  EXPECT_NEAR(test.images[1].mean().item<float>(), 0.9f, 1.0 / 255);
  ASSERT_EQ(train.size(), 13);
  EXPECT_EQ(train.labels.eq(0).sum().item<std::int64_t>(), 8);
  for (std::int64_t i = 0; i < 8; ++i)  // 0, .1, .2, .3, .5, .6, .7, .8: never a test image
    EXPECT_TRUE(std::abs(train.images[i].mean().item<float>() - 0.4f) > 0.05f &&
                std::abs(train.images[i].mean().item<float>() - 0.9f) > 0.05f);
  // train/ and val/: each split is its folder, whole.
  test::TempDir split;
  for (const char* d : {"train/a", "val/a"}) std::filesystem::create_directories(split.path() / d);
  write_png(split.file("train/a/1.png"), at::zeros({1, 10, 10}));
  write_png(split.file("val/a/1.png"), at::full({1, 10, 10}, 1.0f));
  const Dataset val = load_dataset("folder:" + split.path().string(), Split::Test, DataLocations(), {1, 5, 5}, 0, 0);
  ASSERT_EQ(val.size(), 1);
  EXPECT_FLOAT_EQ(val.images[0].mean().item<float>(), 1.0f);
  test::TempDir empty;
  EXPECT_THROW(load_dataset("folder:" + empty.path().string(), Split::Test, DataLocations(), {1, 5, 5}, 0, 0), Error);
}

TEST(Transforms, ClosedFormIntensityMaps) {
  at::Tensor x = at::rand({3, 1, 28, 28});
  // low_light severity 3: 0.5 * x^2.5
  EXPECT_TRUE(at::allclose(transform("low_light", x, 3), 0.5 * x.pow(2.5), 1e-5, 1e-6));
  // invert severity 5: 1 - x; severity 2: 0.6 x + 0.4 (1 - x)
  EXPECT_TRUE(at::allclose(transform("invert", x, 5), 1 - x, 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(transform("invert", x, 2), 0.6 * x + 0.4 * (1 - x), 1e-5, 1e-6));
  // contrast severity 1: (x - mean) * 0.4 + mean, mean per image
  at::Tensor mean = x.mean({1, 2, 3}, true);
  EXPECT_TRUE(at::allclose(transform("contrast", x, 1), (x - mean) * 0.4 + mean, 1e-5, 1e-6));
}

TEST(Transforms, NoiseStatistics) {
  at::Tensor g = transform("gaussian_noise", mid_gray(64), 2) - 0.5;
  EXPECT_NEAR(g.mean().item<float>(), 0.0f, 0.005f);
  EXPECT_NEAR(g.std().item<float>(), 0.12f, 0.005f);
  // Shot noise: Poisson(lambda x) / lambda has mean x and variance x / lambda (severity 3: lambda 12).
  at::Tensor s = transform("shot_noise", mid_gray(64), 3);
  EXPECT_NEAR(s.mean().item<float>(), 0.5f, 0.01f);
  EXPECT_NEAR(s.var().item<float>(), 0.5f / 12.0f, 0.004f);
}

TEST(Transforms, BlursMatchAReferenceConvolution) {
  at::Tensor x = at::rand({2, 1, 28, 28});
  // gaussian_blur severity 3 (sigma 1): compare the interior with a normalized Gaussian kernel.
  const double sigma = 1.0;
  const int radius = 4;
  at::Tensor k1 = at::exp(-at::arange(-radius, radius + 1, at::kDouble).pow(2) / (2 * sigma * sigma));
  k1 = (k1 / k1.sum()).to(at::kFloat);
  at::Tensor kernel = (k1.unsqueeze(1) * k1.unsqueeze(0)).view({1, 1, 2 * radius + 1, 2 * radius + 1});
  at::Tensor expected = at::conv2d(x, kernel);
  at::Tensor blurred = transform("gaussian_blur", x, 3).slice(2, radius, 28 - radius).slice(3, radius, 28 - radius);
  EXPECT_LT((blurred - expected).abs().max().item<float>(), 2e-3f);
  // Motion blur keeps a constant image constant (its kernel sums to one) and smooths an edge.
  EXPECT_TRUE(at::allclose(transform("motion_blur", mid_gray(), 5), mid_gray(), 1e-5, 1e-6));
  at::Tensor edge = at::zeros({1, 1, 28, 28});
  edge.slice(3, 14).fill_(1.0f);
  EXPECT_GT(transform("motion_blur", edge, 5).std().item<float>(), 0.0f);
}

TEST(Transforms, JpegErrorGrowsWithSeverityAndFogStaysInRange) {
  at::Tensor x = at::rand({4, 1, 28, 28}).mul(0.5).add(at::linspace(0, 0.5, 28).view({1, 1, 1, 28}));
  const double e1 = (transform("jpeg", x, 1) - x).abs().mean().item<double>();
  const double e5 = (transform("jpeg", x, 5) - x).abs().mean().item<double>();
  EXPECT_GT(e1, 0.0);
  EXPECT_GT(e5, e1);
  at::Tensor fog = transform("fog", x, 4);
  EXPECT_GE(fog.min().item<float>(), 0.0f);
  EXPECT_LE(fog.max().item<float>(), 1.0f);
  EXPECT_FALSE(fog.equal(x));
}

TEST(Transforms, SeededDeterministicAndSeverityChecked) {
  at::Tensor x = at::rand({8, 1, 28, 28});
  for (const char* name : {"gaussian_noise", "shot_noise", "motion_blur", "fog"}) {
    EXPECT_TRUE(transform(name, x, 3, 9).equal(transform(name, x, 3, 9))) << name;
    EXPECT_FALSE(transform(name, x, 3, 9).equal(transform(name, x, 3, 10))) << name;
  }
  EXPECT_THROW(transform("low_light", x, 6), Error);
  EXPECT_THROW(transform("low_light", x, 0), Error);
  EXPECT_EQ(registry().names(PluginKind::DomainTransform).size(), 9u);
}
