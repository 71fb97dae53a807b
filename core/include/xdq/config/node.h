#pragma once
// A YAML node that remembers where it came from, so every config error reads
// "experiments/x.yaml:14 quantization.calibrators[2].percentile: expected a number in (0, 100]".
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

namespace xdq {

class ConfigNode {
 public:
  ConfigNode() : ConfigNode(YAML::Node(), "<none>") {}
  ConfigNode(YAML::Node root, const std::string& file);

  // Parses a YAML file; a missing file or a syntax error is an Error naming the file (and line).
  static ConfigNode load_file(const std::string& path);
  static ConfigNode parse(const std::string& text, const std::string& label);

  const std::string& file() const { return origin_->file; }
  const std::string& key_path() const { return key_path_; }
  int line() const;
  std::string where() const;  // "file:line key.path", or "file --set key.path" for a value given by --set

  bool defined() const { return node_.IsDefined() && !node_.IsNull(); }
  bool is_map() const { return node_.IsMap(); }
  bool is_sequence() const { return node_.IsSequence(); }
  bool is_scalar() const { return node_.IsScalar(); }
  bool has(const std::string& key) const;
  std::size_t size() const { return node_.size(); }

  ConfigNode operator[](const std::string& key) const;  // undefined child when absent
  ConfigNode operator[](std::size_t index) const;
  std::vector<std::string> keys() const;  // map keys in file order
  ConfigNode key_as_value(const std::string& key) const;  // the key's name as a node of its own, at the key's line

  // Required reads: an absent or ill-typed value is an Error with this node's location.
  std::string as_string() const;
  double as_double() const;
  long long as_int() const;
  long long as_int_in(long long lo, long long hi) const;  // "expected an integer in [lo, hi], got V" outside
  bool as_bool() const;
  std::vector<long long> as_int_list() const;
  std::vector<double> as_double_list() const;
  std::vector<std::string> as_string_list() const;  // a scalar reads as a one-element list

  // Optional reads with defaults.
  std::string get(const std::string& key, const std::string& fallback) const;
  std::string get(const std::string& key, const char* fallback) const { return get(key, std::string(fallback)); }
  double get(const std::string& key, double fallback) const;
  long long get(const std::string& key, long long fallback) const;
  // Read as 64-bit and range-checked before narrowing: 4294967300 is refused, never read as 4.
  int get(const std::string& key, int fallback) const;
  bool get(const std::string& key, bool fallback) const;

  // Unknown keys are errors: this names the first key outside `allowed` and lists the allowed ones.
  void require_map() const;
  void check_keys(const std::vector<std::string>& allowed) const;
  [[noreturn]] void fail(const std::string& message) const;

  const YAML::Node& yaml() const { return node_; }

  // --set a.b.c=value: replaces (or creates) the value at a dotted key path; value parsed as YAML. A
  // number selects an item of a list (models.0.path); a YAML alias of the replaced node follows it.
  void set_path(const std::string& dotted_key, const std::string& value);

 private:
  // What every node of one document shares: its file, and the key paths (as in messages) that --set replaced.
  struct Origin {
    std::string file;
    std::vector<std::string> set_keys;
  };
  ConfigNode(YAML::Node node, std::shared_ptr<Origin> origin, std::string key_path, int fallback_line);

  YAML::Node node_;
  std::shared_ptr<Origin> origin_;
  std::string key_path_;
  int fallback_line_;
};

}  // namespace xdq
