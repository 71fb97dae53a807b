#pragma once
// Option schemas: every plugin declares its options (name, type, default, range, one-line doc);
// the core validates a config section against the schema before the plugin sees it.
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <variant>
#include <vector>

namespace xdq {

class ConfigNode;

enum class OptionType { Number, Integer, Bool, String };
const char* to_string(OptionType type);

using OptionValue = std::variant<bool, std::int64_t, double, std::string>;
std::string to_string(const OptionValue& value);

struct OptionSpec {
  std::string name;
  OptionType type = OptionType::Number;
  OptionValue default_value = 0.0;
  double min = -std::numeric_limits<double>::infinity();
  double max = std::numeric_limits<double>::infinity();
  bool min_exclusive = false;
  std::vector<std::string> choices;  // String options: allowed values (empty: any)
  std::string doc;

  static OptionSpec number(std::string name, double fallback, std::string doc);
  static OptionSpec integer(std::string name, std::int64_t fallback, std::string doc);
  static OptionSpec flag(std::string name, bool fallback, std::string doc);
  static OptionSpec text(std::string name, std::string fallback, std::string doc);
  OptionSpec& range(double lo, double hi, bool lo_exclusive = false);
  OptionSpec& one_of(std::vector<std::string> allowed);

  std::string range_text() const;  // "(0, 100]", ">= 1", "one of: a, b"
};

using OptionSchema = std::vector<OptionSpec>;

// Validated values, every schema option present (defaults filled).
class Options {
 public:
  Options() = default;
  explicit Options(std::map<std::string, OptionValue> values) : values_(std::move(values)) {}

  double number(const std::string& name) const;
  std::int64_t integer(const std::string& name) const;
  bool flag(const std::string& name) const;
  const std::string& text(const std::string& name) const;
  const std::map<std::string, OptionValue>& values() const { return values_; }

 private:
  const OptionValue& at(const std::string& name) const;
  std::map<std::string, OptionValue> values_;
};

// Reads `node` (a map; absent means all defaults) against `schema`. Keys in `reserved` belong to the
// caller (e.g. "name") and are skipped; any other unknown key is an error with file:line:key.
Options validate_options(const ConfigNode& node, const OptionSchema& schema,
                         const std::vector<std::string>& reserved = {});

// One value against its spec: type, range (finite numbers only) and choices; errors carry file:line:key.
OptionValue read_option(const ConfigNode& node, const OptionSpec& spec);

// All defaults, no config needed.
Options default_options(const OptionSchema& schema);

}  // namespace xdq
