#include "xdq/data/dataset.h"

#include <cstdio>
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

std::string fnv1a_hex(const void* data, std::size_t bytes, std::uint64_t seed) {
  std::uint64_t h = seed;
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < bytes; ++i) {
    h ^= p[i];
    h *= 1099511628211ULL;
  }
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
