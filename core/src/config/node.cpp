#include "xdq/config/node.h"

#include <cmath>
#include <cstdint>

#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/parser.h>

#include "xdq/error.h"

namespace xdq {

ConfigNode::ConfigNode(YAML::Node root, const std::string& file)
    : ConfigNode(std::move(root), std::make_shared<Origin>(Origin{file, {}}), "", 1) {}

ConfigNode::ConfigNode(YAML::Node node, std::shared_ptr<Origin> origin, std::string key_path, int fallback_line)
    // A missing key's node is a yaml-cpp "zombie" whose type queries throw; it becomes a plain undefined node.
    : node_(node.IsDefined() ? std::move(node) : YAML::Node(YAML::NodeType::Undefined)),
      origin_(std::move(origin)),
      key_path_(std::move(key_path)),
      fallback_line_(fallback_line) {}

namespace {

// The parse events, read once before the tree is built. Aliases let a few lines stand for a huge tree
// (nested aliases multiply) or for a tree that holds itself; either would hang or crash every later walk
// over the config: an alias inside the node it names is refused, and so is a document that would expand
// to more than kMaxExpandedNodes nodes. So is a quoted string left open. Each names the line and key.
constexpr std::uint64_t kMaxExpandedNodes = 100000;

class ParseGuard : public YAML::EventHandler {
 public:
  ParseGuard(const std::string& text, std::string label) : text_(text), label_(std::move(label)) {}

  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override { leaf(mark, anchor, ""); }
  void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor, const std::string& value) override {
    check_quote_closed(mark);
    leaf(mark, anchor, value);
  }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    for (const Open& o : open_)
      if (o.anchor == anchor) fail(mark, "an alias inside the node it names (a recursive alias)");
    const auto it = sizes_.find(anchor);
    add(mark, it == sizes_.end() ? 1 : it->second, "");
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor, YAML::EmitterStyle::value) override {
    open_.push_back({anchor, 1, mark, false, true, 0, path()});
  }
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor, YAML::EmitterStyle::value) override {
    open_.push_back({anchor, 1, mark, true, true, 0, path()});
  }
  void OnSequenceEnd() override { close(); }
  void OnMapEnd() override { close(); }

 private:
  struct Open {
    YAML::anchor_t anchor;
    std::uint64_t nodes;  // expanded nodes so far, aliases counted at the size of what they name
    YAML::Mark mark;
    bool map;
    bool at_key;          // a map's next event is a key
    std::size_t items;    // a list's items so far
    std::string path;     // key path of this node, for messages
  };

  std::string path() const {
    if (open_.empty()) return "";
    const Open& o = open_.back();
    if (!o.map) return o.path + "[" + std::to_string(o.items) + "]";
    return o.path.empty() ? key_ : o.path + "." + key_;
  }
  void leaf(const YAML::Mark& mark, YAML::anchor_t anchor, const std::string& value) {
    if (anchor != YAML::NullAnchor) sizes_[anchor] = 1;
    add(mark, 1, value);
  }
  void close() {
    const Open o = open_.back();
    open_.pop_back();
    if (o.anchor != YAML::NullAnchor) sizes_[o.anchor] = o.nodes;
    add(o.mark, o.nodes, "");
  }
  void add(const YAML::Mark& mark, std::uint64_t nodes, const std::string& scalar) {
    std::uint64_t& total = open_.empty() ? total_ : open_.back().nodes;
    total += nodes;  // both terms are at most kMaxExpandedNodes: no overflow
    if (total > kMaxExpandedNodes)
      fail(mark, "the document expands to more than " + std::to_string(kMaxExpandedNodes) +
                     " nodes (aliases counted at the size of what they name); not a config file");
    if (open_.empty()) return;
    Open& parent = open_.back();
    if (!parent.map) {
      ++parent.items;
    } else {
      if (parent.at_key) key_ = scalar;
      parent.at_key = !parent.at_key;
    }
  }
  // yaml-cpp reads a quoted string left open to the end of the file as one long value, without a word
  // (the file then seems to lack every later key).
  void check_quote_closed(const YAML::Mark& mark) const {
    if (mark.pos < 0 || static_cast<std::size_t>(mark.pos) >= text_.size()) return;
    const char quote = text_[static_cast<std::size_t>(mark.pos)];
    if (quote != '"' && quote != '\'') return;
    for (std::size_t i = static_cast<std::size_t>(mark.pos) + 1; i < text_.size(); ++i) {
      if (quote == '"' && text_[i] == '\\') {
        ++i;  // an escaped character
      } else if (text_[i] == quote) {
        if (quote == '\'' && i + 1 < text_.size() && text_[i + 1] == '\'') ++i;  // '' inside single quotes
        else return;
      }
    }
    fail(mark, "a quoted string is not closed before the end of the file");
  }
  [[noreturn]] void fail(const YAML::Mark& mark, const std::string& message) const {
    const std::string where = path();
    throw Error(label_ + ":" + std::to_string(mark.line + 1) + (where.empty() ? "" : " " + where) + ": " + message);
  }

  const std::string& text_;
  std::string label_;
  std::vector<Open> open_;
  std::map<YAML::anchor_t, std::uint64_t> sizes_;
  std::uint64_t total_ = 0;
  std::string key_;
};

// YAML text parsed into a tree after the ParseGuard's checks; a syntax error is an
// Error naming `label` and the line.
YAML::Node load_guarded(const std::string& text, const std::string& label) {
  try {
    std::istringstream in(text);
    YAML::Parser parser(in);
    ParseGuard guard(text, label);
    while (parser.HandleNextDocument(guard)) {
    }
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw Error(label + ":" + std::to_string(e.mark.line + 1) + ": invalid YAML: " + e.msg);
  }
}

// yaml-cpp keeps the first of two equal keys and drops the other without a word: a silently ignored
// setting. Every map is checked, naming both lines; a key that is a list or a map names nothing.
void check_keys_are_names(const YAML::Node& node, const std::string& label, const std::string& path) {
  if (node.IsSequence()) {
    for (std::size_t i = 0; i < node.size(); ++i) check_keys_are_names(node[i], label, path + "[" + std::to_string(i) + "]");
    return;
  }
  if (!node.IsMap()) return;
  std::map<std::string, int> seen;
  for (const auto& item : node) {
    const int line = item.first.Mark().line + 1;
    if (!item.first.IsScalar())
      throw Error(label + ":" + std::to_string(line) + (path.empty() ? "" : " " + path) +
                  ": a key must be a name, not a list or a map");
    const std::string key = item.first.Scalar();
    const std::string child = path.empty() ? key : path + "." + key;
    const auto [it, fresh] = seen.emplace(key, line);
    if (!fresh)
      throw Error(label + ":" + std::to_string(line) + " " + child + ": duplicate key (first at line " +
                  std::to_string(it->second) + ")");
    check_keys_are_names(item.second, label, child);
  }
}

}  // namespace

ConfigNode ConfigNode::parse(const std::string& text, const std::string& label) {
  const YAML::Node root = load_guarded(text, label);
  check_keys_are_names(root, label, "");
  return ConfigNode(root, label);
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
  for (const std::string& set : origin_->set_keys)
    if (key_path_ == set || key_path_.rfind(set + ".", 0) == 0 || key_path_.rfind(set + "[", 0) == 0)
      return origin_->file + " --set " + key_path_;
  std::string out = origin_->file + ":" + std::to_string(line());
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
    return ConfigNode(YAML::Node(YAML::NodeType::Undefined), origin_, path, line());
  }
  const YAML::Node child = node_[key];
  return ConfigNode(child, origin_, path, line());
}

ConfigNode ConfigNode::operator[](std::size_t index) const {
  if (!node_.IsSequence()) fail("expected a list");
  return ConfigNode(node_[index], origin_, key_path_ + "[" + std::to_string(index) + "]", line());
}

std::vector<std::string> ConfigNode::keys() const {
  std::vector<std::string> out;
  if (!node_.IsMap()) return out;
  for (const auto& kv : node_) out.push_back(kv.first.as<std::string>());
  return out;
}

ConfigNode ConfigNode::key_as_value(const std::string& key) const {
  const ConfigNode value = (*this)[key];
  return ConfigNode(YAML::Node(key), origin_, value.key_path_, value.line());
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
long long ConfigNode::as_int_in(long long lo, long long hi) const {
  const long long v = as_int();
  if (v < lo || v > hi)
    fail("expected an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + std::to_string(v));
  return v;
}
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
int ConfigNode::get(const std::string& key, int fallback) const {
  return has(key) ? static_cast<int>((*this)[key].as_int_in(std::numeric_limits<int>::min(), std::numeric_limits<int>::max()))
                  : fallback;
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
  const std::string label = "--set " + dotted_key;
  const YAML::Node parsed = load_guarded(value, label);
  check_keys_are_names(parsed, label, "");
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
  std::string key_path;  // as messages spell it: models[0].path
  const auto step = [&](const YAML::Node& parent, const std::string& part) {
    key_path += parent.IsSequence() ? "[" + part + "]" : (key_path.empty() ? "" : ".") + part;
    return child(parent, part);
  };
  for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node next = step(chain.back(), parts[i]);
    if (next.IsDefined() && !next.IsNull() && !next.IsMap() && !next.IsSequence())
      throw Error("--set " + dotted_key + ": '" + parts[i] + "' is not a map or a list");
    chain.push_back(next);
  }
  step(chain.back(), parts.back()) = parsed;
  origin_->set_keys.push_back(key_path);
}

}  // namespace xdq
