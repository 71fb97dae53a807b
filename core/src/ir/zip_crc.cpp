#include "zip_crc.h"

#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <vector>

#include "xdq/error.h"

namespace xdq {

namespace {

// Little-endian fields of the zip format (APPNOTE 6.3): end of central directory (EOCD), its zip64
// locator and record, central directory headers and local headers.
constexpr std::uint32_t kEndOfDirectory = 0x06054b50, kZip64Locator = 0x07064b50, kZip64End = 0x06064b50,
                        kDirectoryHeader = 0x02014b50, kLocalHeader = 0x04034b50;

std::uint64_t little_endian(const unsigned char* p, int bytes) {
  std::uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

class Archive {
 public:
  explicit Archive(const std::string& path) : path_(path), in_(path, std::ios::binary) {
    if (!in_) throw Error(path + ": cannot open the model file");
    in_.seekg(0, std::ios::end);
    size_ = static_cast<std::uint64_t>(in_.tellg());
  }

  std::vector<unsigned char> read(std::uint64_t offset, std::uint64_t bytes) {
    if (offset > size_ || bytes > size_ - offset) damaged("a record points past the end of the file");
    std::vector<unsigned char> out(bytes);
    in_.seekg(static_cast<std::streamoff>(offset));
    in_.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(bytes));
    if (!in_) damaged("cannot read " + std::to_string(bytes) + " bytes at offset " + std::to_string(offset));
    return out;
  }

  // CRC-32 of the entry's data (stored or deflated) read in slices, so a large tensor needs no copy.
  std::uint32_t crc_of(std::uint64_t offset, std::uint64_t compressed, int method, const std::string& name) {
    if (method != 0 && method != 8) damaged("entry '" + name + "' uses compression method " + std::to_string(method));
    if (offset > size_ || compressed > size_ - offset) damaged("entry '" + name + "' runs past the end of the file");
    in_.seekg(static_cast<std::streamoff>(offset));
    uLong crc = crc32(0L, Z_NULL, 0);
    z_stream z{};
    if (method == 8 && inflateInit2(&z, -MAX_WBITS) != Z_OK) damaged("cannot start inflating '" + name + "'");
    std::vector<unsigned char> slice(1 << 20), plain(1 << 20);
    int status = Z_OK;
    for (std::uint64_t left = compressed; left > 0;) {
      const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(left, slice.size()));
      in_.read(reinterpret_cast<char*>(slice.data()), static_cast<std::streamsize>(n));
      if (!in_) damaged("cannot read entry '" + name + "'");
      left -= n;
      if (method == 0) {
        crc = crc32(crc, slice.data(), static_cast<uInt>(n));
        continue;
      }
      z.next_in = slice.data();
      z.avail_in = static_cast<uInt>(n);
      do {
        z.next_out = plain.data();
        z.avail_out = static_cast<uInt>(plain.size());
        status = inflate(&z, Z_NO_FLUSH);
        if (status != Z_OK && status != Z_STREAM_END) {
          inflateEnd(&z);
          damaged("entry '" + name + "' does not inflate");
        }
        crc = crc32(crc, plain.data(), static_cast<uInt>(plain.size() - z.avail_out));
      } while (z.avail_out == 0 && status != Z_STREAM_END);
    }
    if (method == 8) inflateEnd(&z);
    return static_cast<std::uint32_t>(crc);
  }

  [[noreturn]] void damaged(const std::string& what) const {
    throw Error(path_ + ": damaged model file: " + what + "; the file was changed or cut after it was written");
  }

  std::uint64_t size() const { return size_; }

 private:
  std::string path_;
  std::ifstream in_;
  std::uint64_t size_ = 0;
};

}  // namespace

void verify_zip_crcs(const std::string& path) {
  Archive zip(path);
  // The EOCD record is the last 22 bytes before a comment of at most 65535 bytes.
  const std::uint64_t tail_size = std::min<std::uint64_t>(zip.size(), 22 + 65535);
  const std::vector<unsigned char> tail = zip.read(zip.size() - tail_size, tail_size);
  std::int64_t eocd = -1;
  for (std::int64_t i = static_cast<std::int64_t>(tail_size) - 22; i >= 0 && eocd < 0; --i)
    if (little_endian(&tail[static_cast<std::size_t>(i)], 4) == kEndOfDirectory) eocd = i;
  if (eocd < 0) throw Error(path + ": not a TorchScript file (no zip archive)");
  const unsigned char* e = &tail[static_cast<std::size_t>(eocd)];
  std::uint64_t entries = little_endian(e + 10, 2), directory_size = little_endian(e + 12, 4),
                directory_offset = little_endian(e + 16, 4);
  const std::uint64_t eocd_offset = zip.size() - tail_size + static_cast<std::uint64_t>(eocd);
  if (eocd_offset >= 20) {  // zip64: the locator lies just before the EOCD and points to the zip64 record
    const std::vector<unsigned char> locator = zip.read(eocd_offset - 20, 20);
    if (little_endian(locator.data(), 4) == kZip64Locator) {
      const std::vector<unsigned char> record = zip.read(little_endian(locator.data() + 8, 8), 56);
      if (little_endian(record.data(), 4) != kZip64End) zip.damaged("the zip64 directory record is missing");
      entries = little_endian(record.data() + 32, 8);
      directory_size = little_endian(record.data() + 40, 8);
      directory_offset = little_endian(record.data() + 48, 8);
    }
  }
  const std::vector<unsigned char> directory = zip.read(directory_offset, directory_size);
  std::size_t at = 0;
  for (std::uint64_t k = 0; k < entries; ++k) {
    if (at + 46 > directory.size() || little_endian(&directory[at], 4) != kDirectoryHeader)
      zip.damaged("directory entry " + std::to_string(k) + " is malformed");
    const unsigned char* h = &directory[at];
    const int method = static_cast<int>(little_endian(h + 10, 2));
    const auto crc = static_cast<std::uint32_t>(little_endian(h + 16, 4));
    std::uint64_t compressed = little_endian(h + 20, 4), uncompressed = little_endian(h + 24, 4),
                  local = little_endian(h + 42, 4);
    const std::size_t name_length = little_endian(h + 28, 2), extra_length = little_endian(h + 30, 2),
                      comment_length = little_endian(h + 32, 2);
    if (at + 46 + name_length + extra_length + comment_length > directory.size())
      zip.damaged("directory entry " + std::to_string(k) + " is malformed");
    const std::string name(reinterpret_cast<const char*>(h + 46), name_length);
    // Zip64 extra field: the 64-bit values of the 32-bit fields that read 0xFFFFFFFF, in this order.
    for (std::size_t x = 0; x + 4 <= extra_length;) {
      const unsigned char* f = h + 46 + name_length + x;
      const std::size_t id = little_endian(f, 2), length = little_endian(f + 2, 2);
      if (x + 4 + length > extra_length) zip.damaged("entry '" + name + "' has a malformed extra field");
      if (id == 0x0001) {
        std::size_t field = 4;
        for (std::uint64_t* value : {&uncompressed, &compressed, &local})
          if (*value == 0xFFFFFFFFu && field + 8 <= 4 + length) {
            *value = little_endian(f + field, 8);
            field += 8;
          }
      }
      x += 4 + length;
    }
    const std::vector<unsigned char> header = zip.read(local, 30);
    if (little_endian(header.data(), 4) != kLocalHeader) zip.damaged("entry '" + name + "' has no local header");
    const std::uint64_t data = local + 30 + little_endian(header.data() + 26, 2) + little_endian(header.data() + 28, 2);
    if (zip.crc_of(data, compressed, method, name) != crc)
      zip.damaged("the CRC-32 of entry '" + name + "' does not match its content");
    at += 46 + name_length + extra_length + comment_length;
  }
}

}  // namespace xdq
