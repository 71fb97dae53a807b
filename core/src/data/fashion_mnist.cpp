#include "xdq/data/fashion_mnist.h"

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <vector>

#include <zlib.h>

#include "xdq/error.h"

namespace xdq {

namespace {
constexpr const char* kDebianDir = "/usr/share/datasets/fashion-mnist";

std::uint32_t big_endian(const unsigned char* p) {
  return (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) | (std::uint32_t(p[2]) << 8) | p[3];
}
}  // namespace

std::string fashion_mnist_dir(const std::string& preferred) {
  if (!preferred.empty()) return preferred;
  if (const char* env = std::getenv("XDQ_FASHION_MNIST_DIR"); env && *env) return env;
  return kDebianDir;
}

at::Tensor read_idx_gz(const std::string& path) {
  gzFile file = gzopen(path.c_str(), "rb");
  if (!file) throw Error(path + ": cannot open (install dataset-fashion-mnist or set XDQ_FASHION_MNIST_DIR)");
  std::vector<unsigned char> bytes;
  unsigned char buffer[1 << 16];
  int n;
  while ((n = gzread(file, buffer, sizeof buffer)) > 0) bytes.insert(bytes.end(), buffer, buffer + n);
  const bool failed = n < 0;
  gzclose(file);
  if (failed) throw Error(path + ": corrupt gzip stream");
  if (bytes.size() < 8 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08)
    throw Error(path + ": not an IDX file of unsigned bytes");
  const int dims = bytes[3];
  if (dims != 1 && dims != 3) throw Error(path + ": expected a 1-d or 3-d IDX file");
  const std::size_t header = 4 + 4 * static_cast<std::size_t>(dims);
  if (bytes.size() < header) throw Error(path + ": IDX header cut short");
  std::vector<std::int64_t> shape;
  std::size_t count = 1;  // checked against the bytes present at each step: a header cannot overflow it
  for (int d = 0; d < dims; ++d) {
    shape.push_back(big_endian(&bytes[4 + 4 * d]));
    if (shape.back() == 0) throw Error(path + ": the IDX header declares an empty dimension (no images)");
    if (static_cast<std::size_t>(shape.back()) > (bytes.size() - header) / count)
      throw Error(path + ": the IDX header declares more bytes than the file holds");
    count *= static_cast<std::size_t>(shape.back());
  }
  if (bytes.size() != header + count) throw Error(path + ": size does not match its IDX header");
  if (dims == 3) shape.insert(shape.begin() + 1, 1);  // [N, 1, H, W]
  at::Tensor out = at::empty(shape, at::kByte);
  std::memcpy(out.data_ptr(), bytes.data() + header, count);
  return out;
}

Dataset load_fashion_mnist(const std::string& dir, Split split) {
  const std::string prefix = split == Split::Train ? "train" : "t10k";
  const std::filesystem::path base(dir);
  at::Tensor images = read_idx_gz((base / (prefix + "-images-idx3-ubyte.gz")).string());
  at::Tensor labels = read_idx_gz((base / (prefix + "-labels-idx1-ubyte.gz")).string());
  if (images.size(0) != labels.size(0)) throw Error(dir + ": image and label counts differ for " + prefix);
  return Dataset{std::string("fashion_mnist.") + (split == Split::Train ? "train" : "test"),
                 images.to(at::kFloat).div_(255.0f), labels.to(at::kLong)};
}

}  // namespace xdq
