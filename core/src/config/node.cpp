#include "xdq/config/node.h"

#include <cmath>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "xdq/error.h"

namespace xdq {

ConfigNode::ConfigNode(YAML::Node node, std::shared_ptr<const std::string> file, std::string key_path,
                       int fallback_line)
    // A missing key's node is a yaml-cpp "zombie" whose type queries throw; it becomes a plain undefined node.
    : node_(node.IsDefined() ? std::move(node) : YAML::Node(YAML::NodeType::Undefined)),
      file_(std::move(file)),
      key_path_(std::move(key_path)),
      fallback_line_(fallback_line) {}

namespace {

// yaml-cpp keeps the first of two equal keys and drops the other without a word: a silently ignored
// setting. Every map is checked, naming both lines.
void check_duplicate_keys(const YAML::Node& node, const std::string& label, const std::string& path) {
  if (node.IsSequence()) {
    for (std::size_t i = 0; i < node.size(); ++i) check_duplicate_keys(node[i], label, path + "[" + std::to_string(i) + "]");
    return;
  }
  if (!node.IsMap()) return;
  std::map<std::string, int> seen;
  for (const auto& item : node) {
    const std::string key = item.first.IsScalar() ? item.first.Scalar() : "";
    const std::string child = path.empty() ? key : path + "." + key;
    const int line = item.first.Mark().line + 1;
    const auto [it, fresh] = seen.emplace(key, line);
    if (!fresh)
      throw Error(label + ":" + std::to_string(line) + " " + child + ": duplicate key (first at line " +
                  std::to_string(it->second) + ")");
    check_duplicate_keys(item.second, label, child);
  }
}

}  // namespace

ConfigNode ConfigNode::parse(const std::string& text, const std::string& label) {
  auto file = std::make_shared<const std::string>(label);
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw Error(label + ":" + std::to_string(e.mark.line + 1) + ": invalid YAML: " + e.msg);
  }
  check_duplicate_keys(root, label, "");
  return ConfigNode(root, file, "", 1);
}

ConfigNode ConfigNode::load_file(const std::string& path) {
  // Configs are small: a size bound keeps a wrong path (a device, a data file) from being read at length.
  constexpr std::uintmax_t kMaxConfigBytes = 1 << 20;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw Error(path + ": cannot open file (not found)");
  if (!std::filesystem::is_regular_file(path, ec)) throw Error(path + ": not a regular file");
  if (std::filesystem::file_size(path, ec) > kMaxConfigBytes)
    throw Error(path + ": larger than " + std::to_string(kMaxConfigBytes) + " bytes; not a config file");
  std::ifstream in(path);
  if (!in) throw Error(path + ": cannot open file");
  std::stringstream text;
  text << in.rdbuf();
  return parse(text.str(), path);
}

int ConfigNode::line() const {
  if (node_.IsDefined()) {
    const YAML::Mark mark = node_.Mark();
    if (!mark.is_null()) return mark.line + 1;
  }
  return fallback_line_;
}

std::string ConfigNode::where() const {
  std::string out = *file_ + ":" + std::to_string(line());
  if (!key_path_.empty()) out += " " + key_path_;
  return out;
}

void ConfigNode::fail(const std::string& message) const { throw Error(where() + ": " + message); }

bool ConfigNode::has(const std::string& key) const {
  return node_.IsDefined() && node_.IsMap() && node_[key].IsDefined() && !node_[key].IsNull();
}

ConfigNode ConfigNode::operator[](const std::string& key) const {
  std::string path = key_path_.empty() ? key : key_path_ + "." + key;
  // A missing key's child is undefined, and so are its children (yaml-cpp's would throw).
  if (!node_.IsDefined() || !node_.IsMap()) {
    if (node_.IsDefined() && !node_.IsNull()) fail("expected a map with key '" + key + "'");
    return ConfigNode(YAML::Node(YAML::NodeType::Undefined), file_, path, line());
  }
  const YAML::Node child = node_[key];
  return ConfigNode(child, file_, path, line());
}

ConfigNode ConfigNode::operator[](std::size_t index) const {
  if (!node_.IsSequence()) fail("expected a list");
  return ConfigNode(node_[index], file_, key_path_ + "[" + std::to_string(index) + "]", line());
}

std::vector<std::string> ConfigNode::keys() const {
  std::vector<std::string> out;
  if (!node_.IsMap()) return out;
  for (const auto& kv : node_) out.push_back(kv.first.as<std::string>());
  return out;
}

namespace {
template <class T>
T read_scalar(const ConfigNode& node, const YAML::Node& yaml, const char* what) {
  if (!node.defined()) node.fail("missing value (expected " + std::string(what) + ")");
  if (!yaml.IsScalar()) node.fail(std::string("expected ") + what);
  try {
    return yaml.as<T>();
  } catch (const YAML::Exception&) {
    node.fail(std::string("expected ") + what + ", got '" + yaml.Scalar() + "'");
  }
}
}  // namespace

std::string ConfigNode::as_string() const { return read_scalar<std::string>(*this, node_, "a string"); }
// NaN and infinities are refused wherever a number is read: one in a normalization or a weight would
// turn every result it touches into noise.
double ConfigNode::as_double() const {
  const double v = read_scalar<double>(*this, node_, "a number");
  if (!std::isfinite(v)) fail("expected a finite number, got '" + node_.Scalar() + "'");
  return v;
}
long long ConfigNode::as_int() const { return read_scalar<long long>(*this, node_, "an integer"); }
bool ConfigNode::as_bool() const { return read_scalar<bool>(*this, node_, "true or false"); }

std::vector<long long> ConfigNode::as_int_list() const {
  if (is_scalar()) return {as_int()};
  if (!is_sequence()) fail("expected a list of integers");
  std::vector<long long> out;
  for (std::size_t i = 0; i < size(); ++i) out.push_back((*this)[i].as_int());
  return out;
}

std::vector<double> ConfigNode::as_double_list() const {
  if (is_scalar()) return {as_double()};
  if (!is_sequence()) fail("expected a list of numbers");
  std::vector<double> out;
  for (std::size_t i = 0; i < size(); ++i) out.push_back((*this)[i].as_double());
  return out;
}

std::vector<std::string> ConfigNode::as_string_list() const {
  if (is_scalar()) return {as_string()};
  if (!is_sequence()) fail("expected a list of strings");
  std::vector<std::string> out;
  for (std::size_t i = 0; i < size(); ++i) out.push_back((*this)[i].as_string());
  return out;
}

std::string ConfigNode::get(const std::string& key, const std::string& fallback) const {
  return has(key) ? (*this)[key].as_string() : fallback;
}
double ConfigNode::get(const std::string& key, double fallback) const {
  return has(key) ? (*this)[key].as_double() : fallback;
}
long long ConfigNode::get(const std::string& key, long long fallback) const {
  return has(key) ? (*this)[key].as_int() : fallback;
}
bool ConfigNode::get(const std::string& key, bool fallback) const {
  return has(key) ? (*this)[key].as_bool() : fallback;
}

void ConfigNode::require_map() const {
  if (!node_.IsMap()) fail(defined() ? "expected a map" : "missing section");
}

void ConfigNode::check_keys(const std::vector<std::string>& allowed) const {
  require_map();
  for (const auto& kv : node_) {
    const std::string key = kv.first.as<std::string>();
    bool known = false;
    for (const auto& a : allowed) known = known || a == key;
    if (known) continue;
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
    ConfigNode child((*this)[key]);
    child.fallback_line_ = kv.first.Mark().line + 1;
    child.fail("unknown key (allowed: " + list + ")");
  }
}

void ConfigNode::set_path(const std::string& dotted_key, const std::string& value) {
  YAML::Node parsed;
  try {
    parsed = YAML::Load(value);
  } catch (const YAML::Exception& e) {
    throw Error("--set " + dotted_key + ": invalid YAML value '" + value + "'");
  }
  std::vector<std::string> parts;
  std::stringstream ss(dotted_key);
  for (std::string part; std::getline(ss, part, '.');) {
    if (part.empty()) throw Error("--set " + dotted_key + ": empty key segment");
    parts.push_back(part);
  }
  if (parts.empty()) throw Error("--set: missing key");
  // yaml-cpp nodes are handles: walking with operator[] on non-const nodes creates missing maps. A
  // number selects an existing item of a list (models.0.path).
  auto child = [&](YAML::Node parent, const std::string& part) {
    if (!parent.IsSequence()) return parent[part];
    const bool number = part.find_first_not_of("0123456789") == std::string::npos && part.size() < 9;
    if (!number || std::stoul(part) >= parent.size())
      throw Error("--set " + dotted_key + ": '" + part + "' is not an item of a list of " + std::to_string(parent.size()));
    return parent[std::stoul(part)];
  };
  // (Handles are copied into the chain, never assigned: assigning one yaml-cpp node to another rewrites
  // the first node's content.)
  std::vector<YAML::Node> chain{node_};
  for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node next = child(chain.back(), parts[i]);
    if (next.IsDefined() && !next.IsNull() && !next.IsMap() && !next.IsSequence())
      throw Error("--set " + dotted_key + ": '" + parts[i] + "' is not a map or a list");
    chain.push_back(next);
  }
  child(chain.back(), parts.back()) = parsed;
}

}  // namespace xdq
