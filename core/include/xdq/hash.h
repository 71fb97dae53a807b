#pragma once
// Content hashes that trace results to their inputs and key the caches: FNV-1a 64 over raw bytes (chain
// calls through `seed`), and as 16 hex digits (files and tensors alike).
#include <cstddef>
#include <cstdint>
#include <string>

namespace xdq {

std::uint64_t fnv1a(const void* data, std::size_t bytes, std::uint64_t seed = 1469598103934665603ULL);
std::string fnv1a_hex(const void* data, std::size_t bytes, std::uint64_t seed = 1469598103934665603ULL);
std::string file_hash(const std::string& path);

// SHA-256 as 64 hex digits: what pins a model file (`sha256:` in a model entry, the resolved config).
std::string sha256_hex(const void* data, std::size_t bytes);
std::string file_sha256(const std::string& path);

}  // namespace xdq
