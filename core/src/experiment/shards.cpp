#include "shards.h"

#include <filesystem>
#include <fstream>
#include <iterator>

#include <nlohmann/json.hpp>

#include "xdq/data/dataset.h"
#include "xdq/error.h"
#include "xdq/files.h"
#include "xdq/hash.h"

namespace xdq {

namespace fs = std::filesystem;

namespace {

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path.string() + ": cannot read");
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

nlohmann::json run_json(const RunResult& r) {
  nlohmann::json j{{"id", r.id},
                   {"model", r.model},
                   {"w_bits", r.w_bits},
                   {"a_bits", r.a_bits},
                   {"calibrator", r.calibrator},
                   {"rounding", r.rounding},
                   {"calibrator_options", r.calibrator_options},
                   {"rounding_options", r.rounding_options},
                   {"passes", r.passes},
                   {"calibration_source", r.calibration_source},
                   {"calibration_domain", r.calibration_domain},
                   {"calibration_count", r.calibration_count},
                   {"calibration_seed", r.calibration_seed},
                   {"seconds", r.seconds},
                   {"peak_rss_mib", r.peak_rss_mib},
                   {"error", r.error}};
  j["units"] = nlohmann::json::array();
  for (const UnitTiming& u : r.units)
    j["units"].push_back({u.name, u.iterations, u.caching_seconds, u.seconds_per_iteration, u.step_iterations,
                          u.step_caching_seconds, u.step_seconds_per_iteration, u.seconds});
  j["results"] = nlohmann::json::array();
  for (const DomainResult& d : r.results) {
    nlohmann::json dj = {{"domain", d.domain}, {"n", d.n}, {"fp32_top1", d.fp32_top1}, {"quant_top1", d.quant_top1}};
    add_cell_details_json(d, dj);
    j["results"].push_back(dj);
  }
  if (r.exported.requested()) j["export"] = export_json(r.exported);
  if (r.selection.requested()) j["selection"] = selection_json(r.selection);
  return j;
}

RunResult run_from_json(const nlohmann::json& j) {
  RunResult r;
  r.id = j.at("id");
  r.model = j.at("model");
  r.w_bits = j.at("w_bits");
  r.a_bits = j.at("a_bits");
  r.calibrator = j.at("calibrator");
  r.rounding = j.at("rounding");
  r.calibrator_options = j.at("calibrator_options").get<std::map<std::string, std::string>>();
  r.rounding_options = j.at("rounding_options").get<std::map<std::string, std::string>>();
  r.passes = j.at("passes").get<std::vector<std::string>>();
  r.calibration_source = j.at("calibration_source");
  r.calibration_domain = j.at("calibration_domain");
  r.calibration_count = j.at("calibration_count");
  r.calibration_seed = j.at("calibration_seed");
  r.seconds = j.at("seconds");
  r.peak_rss_mib = j.value("peak_rss_mib", 0.0);
  r.error = j.at("error");
  for (const auto& u : j.at("units")) r.units.push_back({u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7]});
  for (const auto& d : j.at("results")) {
    r.results.push_back({d.at("domain"), d.at("n"), d.at("fp32_top1"), d.at("quant_top1")});
    read_cell_details_json(d, r.results.back());
  }
  r.exported = export_from_json(j.value("export", nlohmann::json()));
  r.selection = selection_from_json(j.value("selection", nlohmann::json()));
  return r;
}

nlohmann::json samples_json(const std::vector<SampleImages>& samples, const fs::path& folder, const std::string& prefix) {
  nlohmann::json list = nlohmann::json::array();
  for (std::size_t k = 0; k < samples.size(); ++k) {
    const std::string file = prefix + std::to_string(k) + ".xdqimg";
    save_dataset(Dataset{samples[k].name, samples[k].images, {}}, (folder / file).string());
    list.push_back({{"name", samples[k].name}, {"columns", samples[k].columns}, {"file", file}});
  }
  return list;
}

std::vector<SampleImages> samples_from_json(const nlohmann::json& list, const fs::path& folder) {
  std::vector<SampleImages> out;
  for (const auto& s : list)
    out.push_back({s.at("name"), load_dataset_file((folder / s.at("file").get<std::string>()).string()).images, s.at("columns")});
  return out;
}

// A shard's seal: the job it belongs to, the hash of the resolved config it was computed under, the
// SHA-256 of every file beside it, and a checksum over all of that and its data. A shard copied from
// another folder or configuration, or edited, fails one of them when it is read.
constexpr const char* kChecksum = "checksum";

std::string content_checksum(nlohmann::json j) {
  j.erase(kChecksum);
  const std::string text = j.dump();
  return sha256_hex(text.data(), text.size());
}

nlohmann::json file_hashes(const fs::path& folder) {
  std::map<std::string, std::string> hashes;  // sorted: the same listing on every filesystem
  for (const auto& entry : fs::directory_iterator(folder))
    if (entry.is_regular_file() && entry.path().filename() != "shard.json")
      hashes[entry.path().filename().string()] = file_sha256(entry.path().string());
  return hashes;
}

}  // namespace

ShardFolder::ShardFolder(const ConfigText& resolved_config, const std::string& out_dir, const std::string& kind) {
  if (out_dir.empty()) return;
  dir_ = (fs::path(out_dir) / kind).string();
  config_ = resolved_config();
  config_sha256_ = sha256_hex(config_.data(), config_.size());
  const fs::path recorded = fs::path(dir_) / "config.yaml";
  if (fs::exists(recorded) && read_text(recorded) != config_)
    throw Error(out_dir + ": holds the finished jobs of another configuration (" + recorded.string() +
                " differs from this experiment's resolved config); use another --out, or remove " + dir_);
}

std::unique_ptr<PathLock> ShardFolder::lock(const std::string& id) const {
  if (!enabled()) return nullptr;
  return std::make_unique<PathLock>((fs::path(dir_) / id).string(), PathLock::Mode::Exclusive, "job " + id);
}

bool ShardFolder::done(const std::string& id) const {
  return enabled() && fs::is_regular_file(fs::path(dir_) / id / "shard.json");
}

std::string ShardFolder::record_config() const {
  fs::create_directories(dir_);
  const fs::path recorded = fs::path(dir_) / "config.yaml";
  if (!fs::exists(recorded)) write_file_atomically(recorded.string(), [&](std::ostream& out) { out << config_; });
  return recorded.string();
}

void ShardFolder::write(const std::string& id, const std::function<nlohmann::json(const fs::path&)>& fill) const {
  if (!enabled()) return;
  record_config();
  const fs::path final_dir = fs::path(dir_) / id;
  const fs::path staging = temporary_name(final_dir.string());
  try {
    fs::create_directories(staging);
    nlohmann::json j = fill(staging);
    j["job"] = id;
    j["config_sha256"] = config_sha256_;
    j["files_sha256"] = file_hashes(staging);
    j[kChecksum] = content_checksum(j);
    write_file_atomically((staging / "shard.json").string(), [&](std::ostream& out) { out << j.dump(1) << "\n"; });
    std::error_code ec;
    fs::rename(staging, final_dir, ec);
    if (ec) fs::remove_all(staging);  // another process finished the same job first: its shard stands
    fs::remove(fs::path(dir_) / (id + ".phases.json"), ec);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(staging, ec);
    throw;
  }
}

nlohmann::json ShardFolder::read(const std::string& id, fs::path* folder) const {
  const fs::path file = fs::path(dir_) / id / "shard.json";
  if (folder) *folder = file.parent_path();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text(file));
  } catch (const nlohmann::json::exception& e) {
    throw Error(file.string() + ": not a readable job shard (" + e.what() + ")");
  }
  const std::string recompute = "; remove " + file.parent_path().string() + " and run the experiment into this folder again to recompute the job";
  const auto text = [&](const char* key) { return j.is_object() && j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string(); };
  if (text("job") != id)
    throw Error(file.string() + ": holds job '" + text("job") + "', not '" + id + "'" + recompute);
  if (text("config_sha256") != config_sha256_)
    throw Error(file.string() + ": was computed under another configuration (its config hash differs from " +
                (fs::path(dir_) / "config.yaml").string() + ")" + recompute);
  if (text(kChecksum) != content_checksum(j))
    throw Error(file.string() + ": its content does not match its checksum (the file was changed after it was written)" + recompute);
  try {
    if (file_hashes(file.parent_path()) != j.at("files_sha256"))
      throw Error(file.string() + ": the files beside it are not the ones it was written with" + recompute);
  } catch (const fs::filesystem_error& e) {
    throw Error(file.string() + ": cannot read the files beside it (" + e.what() + ")");
  }
  return j;
}

void ShardFolder::save_phases(const std::string& id, const nlohmann::json& phases) const {
  if (!enabled()) return;
  record_config();
  write_file_atomically((fs::path(dir_) / (id + ".phases.json")).string(),
                        [&](std::ostream& out) { out << phases.dump(1) << "\n"; });
}

std::optional<nlohmann::json> ShardFolder::phases(const std::string& id) const {
  const fs::path file = fs::path(dir_) / (id + ".phases.json");
  if (!enabled() || !fs::is_regular_file(file)) return std::nullopt;
  try {
    return nlohmann::json::parse(read_text(file));
  } catch (const nlohmann::json::exception& e) {
    throw Error(file.string() + ": not a readable checkpoint (" + e.what() + "); remove it to redo the job");
  }
}

// index-model-domain-nCOUNT-sSEED[-selector], in characters safe in file names.
std::string ShardStore::id(const JobSpec& job, std::size_t index) const {
  return file_name_safe(std::to_string(index) + "-" + job.entry->name + "-" + job.domain->name + "-n" +
                        std::to_string(job.count) + "-s" + std::to_string(job.seed) +
                        (job.selector ? "-" + job.selector->label : std::string()));
}

void ShardStore::write(const JobSpec& job, std::size_t index, const JobShard& shard) const {
  folder_.write(id(job, index), [&](const fs::path& staging) {
    nlohmann::json j;
    for (const RunResult& r : shard.output.runs) j["runs"].push_back(run_json(r));
    j["layer_shift"] = nlohmann::json::array();
    for (const LayerShiftRow& l : shard.output.layer_shift)
      j["layer_shift"].push_back({l.model, l.setting, l.calibration_domain, l.layer, l.domain, l.clipped_fraction, l.tv_distance});
    j["files"] = shard.output.files;
    j["model_trace"] = YAML::Dump(shard.model_trace);
    j["calibration_trace"] = YAML::Dump(shard.calibration_trace);
    j["samples"] = samples_json(shard.samples, staging, "sample_");
    j["test_samples"] = samples_json(shard.test_samples, staging, "test_sample_");
    return j;
  });
}

JobShard ShardStore::read(const JobSpec& job, std::size_t index) const {
  fs::path folder;
  const nlohmann::json j = folder_.read(id(job, index), &folder);
  try {
    JobShard shard;
    for (const auto& r : j.value("runs", nlohmann::json::array())) shard.output.runs.push_back(run_from_json(r));
    for (const auto& l : j.at("layer_shift"))
      shard.output.layer_shift.push_back({l[0], l[1], l[2], l[3], l[4], l[5], l[6]});
    shard.output.files = j.at("files").get<std::map<std::string, std::string>>();
    shard.model_trace = YAML::Load(j.at("model_trace").get<std::string>());
    shard.calibration_trace = YAML::Load(j.at("calibration_trace").get<std::string>());
    shard.samples = samples_from_json(j.at("samples"), folder);
    shard.test_samples = samples_from_json(j.at("test_samples"), folder);
    return shard;
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error((folder / "shard.json").string() + ": not a readable job shard (" + e.what() + ")");
  }
}

}  // namespace xdq
