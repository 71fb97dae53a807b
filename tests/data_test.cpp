#include <gtest/gtest.h>
#include <zlib.h>

#include "test_util.h"
#include "xdq/data/fashion_mnist.h"
#include "xdq/error.h"

using namespace xdq;

namespace {
void write_gz(const std::string& path, const std::vector<unsigned char>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(f);
}
std::vector<unsigned char> idx_header(unsigned char dims, std::vector<std::uint32_t> shape) {
  std::vector<unsigned char> h{0, 0, 0x08, dims};
  for (auto d : shape)
    for (int s = 24; s >= 0; s -= 8) h.push_back(static_cast<unsigned char>(d >> s));
  return h;
}
}  // namespace

TEST(FashionMnistReader, ReadsImagesAndLabelsFromGzippedIdx) {
  test::TempDir dir;
  auto images = idx_header(3, {3, 2, 2});
  for (int i = 0; i < 12; ++i) images.push_back(static_cast<unsigned char>(i * 20));
  auto labels = idx_header(1, {3});
  labels.insert(labels.end(), {7, 0, 9});
  write_gz(dir.file("t10k-images-idx3-ubyte.gz"), images);
  write_gz(dir.file("t10k-labels-idx1-ubyte.gz"), labels);
  const Dataset d = load_fashion_mnist(dir.path().string(), Split::Test);
  ASSERT_EQ(d.images.sizes(), (std::vector<int64_t>{3, 1, 2, 2}));
  EXPECT_FLOAT_EQ(d.images[1][0][1][0].item<float>(), 6 * 20 / 255.0f);
  EXPECT_EQ(d.labels[2].item<int64_t>(), 9);
}

TEST(FashionMnistReader, RejectsBadMagicAndSizeMismatchNamingTheFile) {
  test::TempDir dir;
  write_gz(dir.file("bad.gz"), {1, 2, 3, 4, 5, 6, 7, 8});
  try {
    read_idx_gz(dir.file("bad.gz"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(dir.file("bad.gz")), std::string::npos);
  }
  auto truncated = idx_header(3, {2, 2, 2});
  truncated.push_back(1);
  write_gz(dir.file("short.gz"), truncated);
  EXPECT_THROW(read_idx_gz(dir.file("short.gz")), Error);
  EXPECT_THROW(read_idx_gz(dir.file("missing.gz")), Error);
}

TEST(FashionMnistReader, ReadsTheDebianPackage) {
  const Dataset test = load_fashion_mnist(fashion_mnist_dir(), Split::Test);
  EXPECT_EQ(test.size(), 10000);
  EXPECT_EQ(test.images.size(2), 28);
  // Ten classes, 1 000 test images each.
  EXPECT_TRUE(at::bincount(test.labels).eq(1000).all().item<bool>());
  EXPECT_LE(test.images.max().item<float>(), 1.0f);
}

TEST(Dataset, SubsetIsDeterministicDistinctAndSeeded) {
  Dataset d{"d", at::arange(100, at::kFloat).view({100, 1, 1, 1}), at::arange(100, at::kLong)};
  const Dataset a = d.subset(10, 3), b = d.subset(10, 3), c = d.subset(10, 4);
  EXPECT_TRUE(a.labels.equal(b.labels));
  EXPECT_FALSE(a.labels.equal(c.labels));
  EXPECT_EQ(std::get<0>(at::_unique(a.labels)).numel(), 10);
  EXPECT_TRUE(a.images.view({-1}).to(at::kLong).equal(a.labels));
  EXPECT_EQ(a.content_hash(), b.content_hash());
  EXPECT_NE(a.content_hash(), c.content_hash());
}

TEST(Preprocess, NormalizesPerChannel) {
  Preprocess p{{0.5, 0.25}, {0.5, 2.0}};
  at::Tensor x = at::ones({1, 2, 1, 1});
  at::Tensor y = p.apply(x);
  EXPECT_FLOAT_EQ(y[0][0][0][0].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(y[0][1][0][0].item<float>(), 0.375f);
  EXPECT_THROW(Preprocess({{0.1, 0.2, 0.3}, {1.0}}).apply(x), Error);
}
