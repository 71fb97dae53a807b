#include "xdq/data/dataset.h"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "xdq/error.h"
#include "xdq/files.h"

namespace xdq {

at::Tensor subset_rows(std::int64_t size, std::int64_t count, std::uint64_t seed) {
  if (count <= 0 || count >= size) return at::arange(size, at::kLong);
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::randperm(size, gen, at::kLong).narrow(0, 0, count);
}

Dataset Dataset::subset(std::int64_t count, std::uint64_t seed) const {
  if (count <= 0 || count >= size()) return *this;
  const at::Tensor order = subset_rows(size(), count, seed);
  Dataset out{name, images.index_select(0, order).contiguous(), {}};
  if (labeled()) out.labels = labels.index_select(0, order).contiguous();
  return out;
}

Dataset Dataset::slice(std::int64_t begin, std::int64_t end) const {
  Dataset out{name, images.slice(0, begin, end), {}};
  if (labeled()) out.labels = labels.slice(0, begin, end);
  return out;
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


namespace {
// Version 2: a trailing FNV-1a 64 checksum of images and labels.
constexpr char kDatasetMagic[8] = {'X', 'D', 'Q', 'I', 'M', 'G', '2', '\0'};
}

void save_dataset(const Dataset& data, const std::string& path) {
  const at::Tensor images = data.images.to(at::kFloat).contiguous();
  const at::Tensor labels = data.labeled() ? data.labels.to(at::kLong).contiguous() : at::Tensor();
  write_file_atomically(path, [&](std::ostream& out) {
    const std::int64_t header[5] = {images.size(0), images.size(1), images.size(2), images.size(3), data.labeled() ? 1 : 0};
    out.write(kDatasetMagic, sizeof kDatasetMagic);
    out.write(reinterpret_cast<const char*>(header), sizeof header);
    out.write(static_cast<const char*>(images.data_ptr()), static_cast<std::streamsize>(images.nbytes()));
    std::uint64_t checksum = fnv1a(images.data_ptr(), images.nbytes());
    if (data.labeled()) {
      out.write(static_cast<const char*>(labels.data_ptr()), static_cast<std::streamsize>(labels.nbytes()));
      checksum = fnv1a(labels.data_ptr(), labels.nbytes(), checksum);
    }
    out.write(reinterpret_cast<const char*>(&checksum), sizeof checksum);
  });
}

Dataset load_dataset_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open file");
  char magic[8];
  std::int64_t header[5];
  in.read(magic, sizeof magic);
  in.read(reinterpret_cast<char*>(header), sizeof header);
  if (!in || std::memcmp(magic, kDatasetMagic, sizeof magic) != 0) throw Error(path + ": not an xdq image file");
  // The header's sizes must account for the file's bytes exactly (each bound keeps the product in range).
  std::uint64_t values = 1;
  for (int i = 0; i < 4; ++i) {
    if (header[i] < 0 || header[i] > (1LL << 32) || (header[i] > 0 && values > (1ULL << 40) / header[i]))
      throw Error(path + ": corrupt header (images of " + std::to_string(header[0]) + "x" + std::to_string(header[1]) + "x" +
                  std::to_string(header[2]) + "x" + std::to_string(header[3]) + ")");
    values *= static_cast<std::uint64_t>(header[i]);
  }
  std::error_code ec;
  const std::uint64_t expected = sizeof magic + sizeof header + 4 * values +
                                 (header[4] ? 8 * static_cast<std::uint64_t>(header[0]) : 0) + sizeof(std::uint64_t);
  const std::uint64_t actual = std::filesystem::file_size(path, ec);
  if (actual < expected)
    throw Error(path + ": file is truncated (its header declares " + std::to_string(expected) + " bytes, the file holds " +
                std::to_string(actual) + ")");
  if (actual > expected) throw Error(path + ": trailing bytes after the images (damaged file)");
  Dataset d{std::filesystem::path(path).stem().string(), at::empty({header[0], header[1], header[2], header[3]}), {}};
  in.read(static_cast<char*>(d.images.data_ptr()), static_cast<std::streamsize>(d.images.nbytes()));
  if (header[4]) {
    d.labels = at::empty({header[0]}, at::kLong);
    in.read(static_cast<char*>(d.labels.data_ptr()), static_cast<std::streamsize>(d.labels.nbytes()));
  }
  std::uint64_t stored = 0;
  in.read(reinterpret_cast<char*>(&stored), sizeof stored);
  if (!in) throw Error(path + ": file is truncated");
  std::uint64_t checksum = fnv1a(d.images.data_ptr(), d.images.nbytes());
  if (d.labeled()) checksum = fnv1a(d.labels.data_ptr(), d.labels.nbytes(), checksum);
  if (checksum != stored) throw Error(path + ": content does not match its checksum (damaged file)");
  return d;
}

}  // namespace xdq

namespace xdq {


}  // namespace xdq
