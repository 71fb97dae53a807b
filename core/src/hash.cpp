#include "xdq/hash.h"

#include <cstdio>
#include <fstream>
#include <iterator>
#include <vector>

#include "xdq/error.h"

namespace xdq {

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

std::string file_hash(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open file");
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return fnv1a_hex(bytes.data(), bytes.size());
}

}  // namespace xdq
