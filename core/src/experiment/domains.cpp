#include "domains.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <ostream>

#include "models.h"
#include "xdq/error.h"
#include "xdq/hash.h"

namespace xdq {

const Dataset& DomainCache::get(const DomainSpec& d, Split default_split, const InputShape& shape, std::int64_t count,
                                std::uint64_t seed, const ModelEntry* model) {
  const Split split = d.fixed_split ? d.split : default_split;
  std::string key = d.name + (split == Split::Train ? "/train/" : "/test/") + std::to_string(count) + "/" +
                    std::to_string(seed) + "/" + shape.key();
  if (!d.synthesizer.empty() || !d.mixture.empty())
    for (const ModelEntry* m : synthesis_models(d, model)) key += "/" + (m ? m->name : std::string("-"));
  if (auto it = cache_.find(key); it != cache_.end()) return it->second;
  if (!d.synthesizer.empty()) return cache_[key] = synthesize(d, shape, count, seed, model);
  return cache_[key] = d.mixture.empty() ? load(d, split, shape, count, seed) : mix(d, split, shape, count, seed, model);
}

const Dataset& DomainCache::calibration_set(const DomainSpec& d, const InputShape& shape, std::int64_t count,
                                            std::uint64_t seed, const ModelEntry* model) {
  const Dataset& set = get(d, Split::Train, shape, count, seed, model);
  if (d.dataset != "none") check_calibration_count(d, set.size(), count);  // `none` holds none: data-free
  return set;
}

// Fewer images than asked would be a result under a count that was not used.
void DomainCache::check_calibration_count(const DomainSpec& d, std::int64_t available, std::int64_t count) const {
  if (available >= count) return;
  const std::string what = "calibration domain '" + d.name + "' holds " + std::to_string(available) +
                           " usable images of the " + std::to_string(count) + " asked (calibration.count)";
  if (calibration_.min_images == 0 || available < calibration_.min_images)
    throw Error(file_ + ": " + what + "; set calibration.min_images to calibrate on fewer" +
                (calibration_.min_images > 0 ? " (it is " + std::to_string(calibration_.min_images) + ")" : std::string()));
  progress_ << "xdq: warning: " << what << "; calibrating on " << available << " (calibration.min_images "
            << calibration_.min_images << ")" << std::endl;
}

CalibrationSet DomainCache::calibration_images(const DomainSpec& d, const InputShape& shape, std::int64_t count,
                                               std::uint64_t seed, const ModelEntry* model) {
  return train_images(d, shape, count, seed, model, true);
}

CalibrationSet DomainCache::pool_images(const DomainSpec& d, const InputShape& shape, std::int64_t count,
                                        std::uint64_t seed, const ModelEntry* model) {
  return train_images(d, shape, count, seed, model, false);
}

CalibrationSet DomainCache::train_images(const DomainSpec& d, const InputShape& shape, std::int64_t count,
                                         std::uint64_t seed, const ModelEntry* model, bool check_count) {
  std::shared_ptr<const TestImages> files;  // the folder's files, when the set is large enough to stream
  const auto small = [&](std::int64_t n) {
    const double mib = 4.0 * static_cast<double>(n * shape.channels * shape.height * shape.width) / (1 << 20);
    return calibration_.stream_above_mb > 0 && mib <= static_cast<double>(calibration_.stream_above_mb);
  };
  // The folder is listed only when the count asked (0: the whole split) may be too large to hold; a set
  // held in memory is listed once, by get().
  if (d.mixture.empty() && d.synthesizer.empty() && d.dataset.rfind("folder:", 0) == 0 && !d.folder.skip_unreadable &&
      (count == 0 || !small(count))) {
    files = std::make_shared<const TestImages>(folder_images(d, Split::Train, shape, count, seed));
    if (small(files->size())) files.reset();
  }
  if (!files) {
    const Dataset& set = check_count ? calibration_set(d, shape, count, seed, model)
                                     : get(d, Split::Train, shape, count, seed, model);
    return {&set, set.images};
  }
  if (check_count) check_calibration_count(d, files->size(), count);
  const auto stream = [files](std::int64_t batch, std::int64_t rows, const CalibrationImages::Visit& visit) {
    if (rows < files->size()) {  // a head: decoded at once
      const at::Tensor head = files->head(rows).images;
      for (std::int64_t b = 0; b < head.size(0); b += batch) visit(head.slice(0, b, std::min(head.size(0), b + batch)), b);
      return;
    }
    std::int64_t first = 0;
    files->for_each_batch(batch, [&](const at::Tensor& images, const at::Tensor&) {
      visit(images, first);
      first += images.size(0);
    });
  };
  return {nullptr, CalibrationImages(files->size(), {shape.channels, shape.height, shape.width}, stream)};
}

std::string CalibrationSet::content_hash() const {
  const std::uint64_t h = images.content_hash();
  return fnv1a_hex(&h, sizeof h);
}

std::vector<const ModelEntry*> DomainCache::synthesis_models(const DomainSpec& d, const ModelEntry* model) const {
  if (!d.mixture.empty()) {
    std::vector<const ModelEntry*> all;
    for (const auto& part : d.mixture)
      for (const ModelEntry* m : synthesis_models(part.first, model)) all.push_back(m);
    return all;
  }
  if (d.synthesizer.empty()) return {};
  if (d.synthesis_models.empty()) return {model};
  std::vector<const ModelEntry*> out;
  for (const std::string& name : d.synthesis_models)
    for (const ModelEntry& e : entries_)
      if (e.name == name) out.push_back(&e);
  return out;
}

const ImportedModel& DomainCache::imported(const ModelEntry& entry) {
  auto it = models_.find(entry.path);
  if (it == models_.end()) {
    it = models_.emplace(entry.path, import_for_experiment(execution_, entry.path)).first;  // synthesis runs as the models do
  }
  return it->second;
}

std::string DomainCache::cache_file(const DomainSpec& d, const InputShape& shape, std::int64_t count, std::uint64_t seed,
                                    const ModelEntry* model) {
  if (d.synthesizer.empty()) return "";
  const PluginChoice& choice = d.synthesizer.front();
  const PluginRecord& plugin = registry_.get(PluginKind::Synthesizer, choice.name);
  std::string key = plugin.name + "@" + plugin.version + ";";
  for (const auto& [name, value] : choice.options.values()) key += name + "=" + to_string(value) + ";";
  for (const ModelEntry* m : synthesis_models(d, model)) {
    if (!m) throw Error("synthesized domain '" + d.name + "' needs a model to synthesize from");
    key += "model=" + file_hash(m->path) + ";";
  }
  key += "count=" + std::to_string(count) + ";seed=" + std::to_string(seed) + ";shape=" + std::to_string(shape.channels) +
         "x" + std::to_string(shape.height) + "x" + std::to_string(shape.width);
  if (execution_.convolution == "winograd") key += ";convolution=winograd";  // other rounding, other images
  const std::string file = plugin.name + "_" + fnv1a_hex(key.data(), key.size()) + ".xdqimg";
  return (std::filesystem::path(cache_directory(data_)) / "synthesized" / file).string();
}

Dataset DomainCache::synthesize(const DomainSpec& d, const InputShape& shape, std::int64_t count, std::uint64_t seed,
                                const ModelEntry* model) {
  const std::string file = cache_file(d, shape, count, seed, model);
  // A cached set is used only when it is whole (checksum) and is what was asked for (count, shape);
  // anything else is named in a warning and synthesized again.
  if (std::filesystem::is_regular_file(file)) {
    try {
      Dataset cached = load_dataset_file(file);
      if (cached.size() != count || cached.images.size(1) != shape.channels || cached.images.size(2) != shape.height ||
          cached.images.size(3) != shape.width)
        throw Error(file + ": holds " + std::to_string(cached.size()) + " images of another shape or count than asked");
      progress_ << "xdq: domain '" << d.name << "': synthesized images from the cache " << file << "\n";
      cached.name = d.name;
      return cached;
    } catch (const Error& e) {
      progress_ << "xdq: warning: " << e.what() << "; synthesizing the set again\n";
    }
  }
  const PluginChoice& choice = d.synthesizer.front();
  const PluginRecord& plugin = registry_.get(PluginKind::Synthesizer, choice.name);
  SynthesisContext context;
  for (const ModelEntry* m : synthesis_models(d, model)) {
    const ImportedModel& im = imported(*m);
    const InputShape in = model_input_shape(*m, im);
    context.models.push_back({m->name, &im.graph, model_preprocess(*m, im), {in.channels, in.height, in.width}});
  }
  context.input_shape = {shape.channels, shape.height, shape.width};
  context.count = count;
  context.seed = seed;
  context.progress = &progress_;
  context.device = execution_.torch_device();
  const auto synthesizer = registry_.load<Synthesizer>(choice.name, choice.options);
  Dataset out = synthesizer.call("synthesize", [&](const Synthesizer& s) { return s.synthesize(context); });
  if (out.size() != count || out.images.dim() != 4 || out.images.size(1) != shape.channels ||
      out.images.size(2) != shape.height || out.images.size(3) != shape.width)
    throw Error("plugin '" + plugin.name + "' (" + plugin.path + ") synthesized images of the wrong shape for domain '" +
                d.name + "'");
  out.name = d.name;
  try {  // a cache that cannot be written costs only time
    std::filesystem::create_directories(std::filesystem::path(file).parent_path());
    save_dataset(out, file);
    progress_ << "xdq: domain '" << d.name << "': " << count << " images synthesized, cached in " << file << "\n";
  } catch (const std::exception& e) {
    progress_ << "xdq: warning: synthesized images not cached (" << e.what() << ")\n";
  }
  return out;
}

// The domain's transforms in order on images [first, first + n) of the set: each transform's seed
// depends on the set's seed and on `first`, so a streamed set is transformed batch by batch reproducibly.
std::vector<Loaded<DomainTransform>> DomainCache::transforms(const DomainSpec& d) const {
  std::vector<Loaded<DomainTransform>> out;
  for (const TransformChoice& t : d.transforms) out.push_back(registry_.load<DomainTransform>(t.name, t.options));
  return out;
}

at::Tensor DomainCache::transformed(const DomainSpec& d, const std::vector<Loaded<DomainTransform>>& transforms,
                                    at::Tensor images, std::uint64_t seed, std::int64_t first) {
  for (std::size_t k = 0; k < transforms.size(); ++k) {
    const int severity = d.transforms[k].severity;
    images = transforms[k].call("apply", [&](const DomainTransform& f) {
      return f.apply(images, severity, seed + 7919 * (k + 1) + 1000003 * static_cast<std::uint64_t>(first));
    });
  }
  return images;
}

Dataset DomainCache::load(const DomainSpec& d, Split split, const InputShape& shape, std::int64_t count,
                          std::uint64_t seed) {
  Dataset ds = load_dataset(d.dataset, split, data_, shape, count, seed, d.folder);
  if (count > 0) ds = ds.subset(count, seed);
  ds.images = transformed(d, transforms(d), ds.images, seed, 0);
  return ds;
}

TestImages DomainCache::test_images(const DomainSpec& d, const InputShape& shape, std::int64_t count, std::uint64_t seed) {
  if (!d.mixture.empty() || !d.synthesizer.empty() || d.dataset.rfind("folder:", 0) != 0)
    return TestImages(get(d, Split::Test, shape, count, seed));
  return folder_images(d, Split::Test, shape, count, seed);
}

TestImages DomainCache::folder_images(const DomainSpec& d, Split split, const InputShape& shape, std::int64_t count,
                                      std::uint64_t seed) const {
  const std::string name = d.dataset + (split == Split::Train ? ".train" : ".test");
  ImageFileList files = list_image_folder(d.dataset.substr(7), d.fixed_split ? d.split : split, d.folder);
  at::Tensor rows = subset_rows(static_cast<std::int64_t>(files.files.size()), count, seed);
  auto loaded = std::make_shared<const std::vector<Loaded<DomainTransform>>>(transforms(d));
  return TestImages(name, std::move(files), rows, shape,
                    d.folder.skip_unreadable, [d, loaded, seed](const at::Tensor& images, std::int64_t first) {
                      return transformed(d, *loaded, images, seed, first);
                    });
}

// count * w_k / sum(w) images from each part (the last part takes the rounding remainder).
Dataset DomainCache::mix(const DomainSpec& d, Split split, const InputShape& shape, std::int64_t count,
                         std::uint64_t seed, const ModelEntry* model) {
  double total = 0;
  for (const auto& part : d.mixture) total += part.second;
  std::vector<at::Tensor> images, labels;
  std::vector<std::pair<std::string, std::int64_t>> parts;
  std::int64_t taken = 0;
  for (std::size_t k = 0; k < d.mixture.size(); ++k) {
    const std::int64_t n =
        k + 1 == d.mixture.size()
            ? count - taken
            : static_cast<std::int64_t>(std::llround(static_cast<double>(count) * d.mixture[k].second / total));
    taken += n;
    if (n <= 0) continue;
    const Dataset& part = get(d.mixture[k].first, split, shape, n, seed + 104729 * (k + 1), model);
    images.push_back(part.images);
    labels.push_back(part.labels);
    if (part.parts.empty()) parts.emplace_back(d.mixture[k].first.name, part.size());
    else parts.insert(parts.end(), part.parts.begin(), part.parts.end());  // a mixture of mixtures: its leaves
  }
  Dataset out{d.name, at::cat(images), {}, parts};
  if (std::all_of(labels.begin(), labels.end(), [](const at::Tensor& t) { return t.defined(); }))
    out.labels = at::cat(labels);
  return out;
}

std::string cache_directory(const DataLocations& data) {
  if (!data.cache.empty()) return data.cache;
  if (const char* env = std::getenv("XDQ_CACHE_DIR")) return env;
  if (const char* home = std::getenv("HOME")) return std::string(home) + "/.cache/xdq";
  return ".xdq_cache";
}

std::string split_name(const DomainSpec& d, Split default_split) {
  if (!d.synthesizer.empty()) return "synthesized:" + d.synthesizer.front().name;
  if (d.dataset == "none") return "none";
  if (!d.mixture.empty()) {
    std::string parts;
    for (const auto& [part, w] : d.mixture) parts += (parts.empty() ? "" : "+") + split_name(part, default_split);
    return "mix(" + parts + ")";
  }
  return d.dataset + ((d.fixed_split ? d.split : default_split) == Split::Train ? ".train" : ".test");
}

}  // namespace xdq
