// The on-disk calibration statistics: magic "XDQSTAT1", the key, then per quantized value: value id,
// bins, histogram (width, min, max, count, positive and negative counts) and per-batch summaries.
// Written to a temporary file and renamed into place; a short or foreign file is an error naming it.
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <ostream>
#include <sstream>
#include <thread>

#include "xdq/quant/statistics_cache.h"

#include "xdq/files.h"
#include "xdq/hash.h"
#include "xdq/error.h"

namespace xdq {

namespace {

// Version 2: a trailing FNV-1a 64 checksum of the body.
constexpr char kMagic[8] = {'X', 'D', 'Q', 'S', 'T', 'A', 'T', '2'};

std::uint64_t hash_tensor(const at::Tensor& t, std::uint64_t h) {
  if (!t.defined()) return fnv1a("-", 1, h);
  const at::Tensor c = t.cpu().contiguous();  // the same key for a graph on any device
  for (std::int64_t d : c.sizes()) h = fnv1a(&d, sizeof d, h);
  return fnv1a(c.data_ptr(), c.nbytes(), h);
}

std::uint64_t hash_text(const std::string& s, std::uint64_t h) { return fnv1a(s.data(), s.size() + 1, h); }

// Everything that decides the activations of a graph: structure, layer parameters, folded BN statistics,
// the constants its generic ops read, and Winograd convolutions (their rounding is their own; the direct
// ones' key is unchanged by the option).
std::uint64_t hash_graph(const Graph& g, std::uint64_t h) {
  if (g.convolution == ConvAlgorithm::Winograd) h = hash_text("convolution=winograd", h);
  for (const Node& n : g.nodes) {
    h = hash_text(n.op, h);
    for (int v : n.inputs) h = fnv1a(&v, sizeof v, h);
    for (int v : n.outputs) h = fnv1a(&v, sizeof v, h);
    for (const at::Tensor& t : {n.weight, n.bias, n.bn.gamma, n.bn.beta, n.bn.mean, n.bn.var}) h = hash_tensor(t, h);
    for (const auto* attr : {&n.conv.stride, &n.conv.padding, &n.conv.dilation})
      h = fnv1a(attr->data(), attr->size() * sizeof(std::int64_t), h);
    h = fnv1a(&n.conv.groups, sizeof n.conv.groups, h);
    h = fnv1a(&n.bn.eps, sizeof n.bn.eps, h);
  }
  for (const auto& [value, constant] : g.constants) {
    h = fnv1a(&value, sizeof value, h);
    if (constant.isTensor()) {
      h = hash_tensor(constant.toTensor(), h);
    } else {
      std::ostringstream text;
      text << constant;
      h = hash_text(text.str(), h);
    }
  }
  return h;
}

template <typename T>
void put(std::ostream& out, const T& v) {
  out.write(reinterpret_cast<const char*>(&v), sizeof v);
}
void put_doubles(std::ostream& out, const std::vector<double>& v) {
  out.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(double)));
}

void save(const CalibrationStatistics& statistics, const std::string& key, const std::string& path) {
  // Parallel runs, or two xdq processes, may write the same statistics: each to its own temporary.
  // The body, then an FNV-1a 64 checksum of it: a damaged file is found before any of it is trusted.
  std::ostringstream out;
  {
    out.write(kMagic, sizeof kMagic);
    put(out, static_cast<std::uint64_t>(key.size()));
    out.write(key.data(), static_cast<std::streamsize>(key.size()));
    put(out, static_cast<std::uint64_t>(statistics.size()));
    for (const auto& [value, s] : statistics) {
      const Histogram& hist = s.histogram();
      put(out, static_cast<std::int32_t>(value));
      put(out, static_cast<std::int32_t>(hist.bins()));
      put(out, hist.width());
      put(out, hist.min());
      put(out, hist.max());
      put(out, hist.count());
      put_doubles(out, hist.positive());
      put_doubles(out, hist.negative());
      put(out, static_cast<std::uint64_t>(s.batches().size()));
      for (const BatchSummary& b : s.batches()) put(out, b);
    }
  }
  const std::string body = out.str();
  const std::uint64_t checksum = fnv1a(body.data(), body.size());
  write_file_atomically(path, [&](std::ostream& file) {
    file.write(body.data(), static_cast<std::streamsize>(body.size()));
    put(file, checksum);
  });
}

// Reads a statistics file whose trailing checksum matched its body.
class Reader {
 public:
  Reader(const std::string& path, std::string body) : path_(path), in_(std::move(body)) {}
  template <typename T>
  T get() {
    T v;
    read(&v, sizeof v);
    return v;
  }
  std::vector<double> doubles(std::size_t n) {
    std::vector<double> v(n);
    read(v.data(), n * sizeof(double));
    return v;
  }
  void read(void* p, std::size_t bytes) {
    if (!in_.read(static_cast<char*>(p), static_cast<std::streamsize>(bytes)))
      throw Error(path_ + ": truncated calibration statistics");
  }

 private:
  std::string path_;
  std::istringstream in_;
};

std::string checked_body(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  if (!file.good() && !file.eof()) throw Error(path + ": cannot read the calibration statistics");
  if (bytes.size() < sizeof kMagic + sizeof(std::uint64_t)) throw Error(path + ": truncated calibration statistics");
  std::uint64_t stored = 0;
  std::memcpy(&stored, bytes.data() + bytes.size() - sizeof stored, sizeof stored);
  bytes.resize(bytes.size() - sizeof stored);
  if (fnv1a(bytes.data(), bytes.size()) != stored)
    throw Error(path + ": calibration statistics do not match their checksum (truncated or damaged file)");
  return bytes;
}

CalibrationStatistics load(const std::string& path, const std::string& key) {
  Reader in(path, checked_body(path));
  char magic[sizeof kMagic];
  in.read(magic, sizeof magic);
  if (!std::equal(magic, magic + sizeof magic, kMagic)) throw Error(path + ": not an xdq calibration statistics file");
  std::string stored(in.get<std::uint64_t>(), '\0');
  if (stored.size() > (1 << 20)) throw Error(path + ": not an xdq calibration statistics file");
  in.read(stored.data(), stored.size());
  if (stored != key) throw Error(path + ": holds the statistics of another graph or calibration set");
  CalibrationStatistics statistics;
  const auto values = in.get<std::uint64_t>();
  for (std::uint64_t i = 0; i < values; ++i) {
    const auto value = in.get<std::int32_t>();
    const auto bins = in.get<std::int32_t>();
    if (bins < 1 || bins > (1 << 16)) throw Error(path + ": not an xdq calibration statistics file");
    const auto width = in.get<double>(), min = in.get<double>(), max = in.get<double>();
    const auto count = in.get<std::int64_t>();
    auto positive = in.doubles(static_cast<std::size_t>(bins));
    auto negative = in.doubles(static_cast<std::size_t>(bins));
    std::vector<BatchSummary> batches(in.get<std::uint64_t>());
    for (BatchSummary& b : batches) b = in.get<BatchSummary>();
    statistics.emplace(value, ActivationStatistics(Histogram(width, min, max, count, std::move(positive), std::move(negative)),
                                                   std::move(batches)));
  }
  return statistics;
}

// The readable key stored in the file (the file name is its hash).
std::string statistics_key(const QuantizedModel& model, const CalibrationImages& images, std::int64_t batch_size, int bins) {
  std::string key = "graph=" + std::to_string(hash_graph(model.graph(), 1469598103934665603ULL)) +
                    ";images=" + std::to_string(images.content_hash()) +
                    ";batch=" + std::to_string(batch_size) + ";bins=" + std::to_string(bins) + ";values=";
  for (const ActivationQuantizer& a : model.activations()) key += std::to_string(a.value) + ",";
  return key;
}

std::string statistics_path(const std::string& dir, const std::string& key) {
  return (std::filesystem::path(dir) / "statistics" / (fnv1a_hex(key.data(), key.size()) + ".xdqstat")).string();
}

}  // namespace

std::shared_ptr<const CalibrationStatistics> StatisticsCache::get(const QuantizedModel& model, const CalibrationImages& images,
                                                                  std::int64_t batch_size, int bins, std::ostream& log) {
  const std::string key = statistics_key(model, images, batch_size, bins);
  const std::string path = statistics_path(dir_, key);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (auto it = loaded_.find(path); it != loaded_.end()) return it->second;
  }
  // The cache only saves time: a damaged file is recomputed and rewritten, a cache that cannot be written
  // is skipped, each with a warning naming the file.
  std::shared_ptr<const CalibrationStatistics> statistics;
  if (std::filesystem::is_regular_file(path)) {
    try {
      statistics = std::make_shared<const CalibrationStatistics>(load(path, key));
      log << "xdq: calibration statistics from the cache " << path << "\n";
    } catch (const Error& e) {
      log << "xdq: warning: " << e.what() << "; recomputing it\n";
    }
  }
  if (!statistics) {
    statistics = std::make_shared<const CalibrationStatistics>(model.collect_statistics(images, batch_size, bins, &log));
    try {
      std::filesystem::create_directories(std::filesystem::path(path).parent_path());
      save(*statistics, key, path);
    } catch (const std::exception& e) {
      log << "xdq: warning: calibration statistics not cached (" << e.what() << ")\n";
    }
  }
  std::lock_guard<std::mutex> lock(mutex_);
  return loaded_.emplace(path, statistics).first->second;
}

}  // namespace xdq
