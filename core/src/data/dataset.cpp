#include "xdq/data/dataset.h"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "xdq/error.h"

namespace xdq {

Dataset Dataset::subset(std::int64_t count, std::uint64_t seed) const {
  if (count <= 0 || count >= size()) return *this;
  at::Generator gen = at::detail::createCPUGenerator(seed);
  at::Tensor order = at::randperm(size(), gen, at::kLong).narrow(0, 0, count);
  Dataset out{name, images.index_select(0, order).contiguous(), {}};
  if (labeled()) out.labels = labels.index_select(0, order).contiguous();
  return out;
}

Dataset Dataset::slice(std::int64_t begin, std::int64_t end) const {
  Dataset out{name, images.slice(0, begin, end), {}};
  if (labeled()) out.labels = labels.slice(0, begin, end);
  return out;
}

std::uint64_t fnv1a(const void* data, std::size_t bytes, std::uint64_t seed) {
  std::uint64_t h = seed;
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < bytes; ++i) {
    h ^= p[i];
    h *= 1099511628211ULL;
  }
  return h;
}

std::string fnv1a_hex(const void* data, std::size_t bytes, std::uint64_t seed) {
  const std::uint64_t h = fnv1a(data, bytes, seed);
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(h));
  return text;
}

std::string Dataset::content_hash() const {
  at::Tensor img = images.contiguous();
  std::string h = fnv1a_hex(img.data_ptr(), img.nbytes());
  if (labeled()) {
    at::Tensor lab = labels.contiguous();
    h = fnv1a_hex(lab.data_ptr(), lab.nbytes(), std::stoull(h, nullptr, 16));
  }
  return h;
}

std::string file_hash(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open file");
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return fnv1a_hex(bytes.data(), bytes.size());
}

namespace {
constexpr char kDatasetMagic[8] = {'X', 'D', 'Q', 'I', 'M', 'G', '1', '\0'};
}

void save_dataset(const Dataset& data, const std::string& path) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    if (!out) throw Error(tmp + ": cannot write");
    const at::Tensor images = data.images.to(at::kFloat).contiguous();
    const std::int64_t header[5] = {images.size(0), images.size(1), images.size(2), images.size(3), data.labeled() ? 1 : 0};
    out.write(kDatasetMagic, sizeof kDatasetMagic);
    out.write(reinterpret_cast<const char*>(header), sizeof header);
    out.write(static_cast<const char*>(images.data_ptr()), static_cast<std::streamsize>(images.nbytes()));
    if (data.labeled()) {
      const at::Tensor labels = data.labels.to(at::kLong).contiguous();
      out.write(static_cast<const char*>(labels.data_ptr()), static_cast<std::streamsize>(labels.nbytes()));
    }
    if (!out) throw Error(tmp + ": write failed");
  }
  std::filesystem::rename(tmp, path);
}

Dataset load_dataset_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open file");
  char magic[8];
  std::int64_t header[5];
  in.read(magic, sizeof magic);
  in.read(reinterpret_cast<char*>(header), sizeof header);
  if (!in || std::memcmp(magic, kDatasetMagic, sizeof magic) != 0) throw Error(path + ": not an xdq image file");
  for (int i = 0; i < 4; ++i)
    if (header[i] < 0 || header[i] > (1LL << 32)) throw Error(path + ": corrupt header");
  Dataset d{std::filesystem::path(path).stem().string(), at::empty({header[0], header[1], header[2], header[3]}), {}};
  in.read(static_cast<char*>(d.images.data_ptr()), static_cast<std::streamsize>(d.images.nbytes()));
  if (header[4]) {
    d.labels = at::empty({header[0]}, at::kLong);
    in.read(static_cast<char*>(d.labels.data_ptr()), static_cast<std::streamsize>(d.labels.nbytes()));
  }
  if (!in) throw Error(path + ": file is truncated");
  return d;
}

}  // namespace xdq

namespace xdq {

at::Tensor Preprocess::apply(const at::Tensor& images) const {
  const std::int64_t channels = images.size(1);
  auto expand = [&](const std::vector<double>& v, const char* what) {
    if (v.size() != 1 && static_cast<std::int64_t>(v.size()) != channels)
      throw Error(std::string("preprocess ") + what + ": " + std::to_string(v.size()) + " values for " +
                  std::to_string(channels) + " channels");
    std::vector<float> f(channels);
    for (std::int64_t c = 0; c < channels; ++c) f[c] = static_cast<float>(v.size() == 1 ? v[0] : v[c]);
    return at::tensor(f).view({1, channels, 1, 1});
  };
  return (images - expand(mean, "mean")) / expand(std, "std");
}

}  // namespace xdq
