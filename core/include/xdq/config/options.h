#pragma once
// Option schemas: every plugin declares its options (name, type, default, range, one-line doc);
// the core validates a config section against the schema before the plugin sees it.
#include <cstdint>
#include <limits>
#include <map>
#include <stdexcept>
#include <string>
#include <type_traits>
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

class Options;

// One option declared once: a typed handle on its spec. A plugin's schema lists its handles' specs and
// the handles read the values, so each name, default, range and doc is written in one place:
//   const xdq::Option<double> kPercentile{xdq::OptionSpec::number("percentile", 99.99, "...").range(0, 100, true)};
//   xdq::OptionSchema schema() { return {kPercentile.spec()}; }
//   xdq::Plugin* create(const xdq::Options& o) { return new Percentile(kPercentile(o)); }
// T is the option's type: double (number), std::int64_t (integer), bool (flag), std::string (text).
template <class T>
class Option {
  static_assert(std::is_same_v<T, double> || std::is_same_v<T, std::int64_t> || std::is_same_v<T, bool> ||
                    std::is_same_v<T, std::string>,
                "an option is a double, std::int64_t, bool or std::string");

 public:
  Option(OptionSpec spec);  // implicit, from a spec's builder chain; std::logic_error when its type is not T
  const OptionSpec& spec() const { return spec_; }
  // The same option with another default: one family of plugins, each its own defaults.
  OptionSpec spec(T default_value) const {
    OptionSpec s = spec_;
    s.default_value = std::move(default_value);
    return s;
  }
  T operator()(const Options& options) const;

 private:
  OptionSpec spec_;
};

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

template <class T>
Option<T>::Option(OptionSpec spec) : spec_(std::move(spec)) {
  const OptionType expected = std::is_same_v<T, double>         ? OptionType::Number
                              : std::is_same_v<T, std::int64_t> ? OptionType::Integer
                              : std::is_same_v<T, bool>         ? OptionType::Bool
                                                                : OptionType::String;
  if (spec_.type != expected) throw std::logic_error("option '" + spec_.name + "' is declared as " + to_string(spec_.type) +
                                                     " and read as " + to_string(expected));
}

template <class T>
T Option<T>::operator()(const Options& options) const {
  if constexpr (std::is_same_v<T, double>) return options.number(spec_.name);
  else if constexpr (std::is_same_v<T, std::int64_t>) return options.integer(spec_.name);
  else if constexpr (std::is_same_v<T, bool>) return options.flag(spec_.name);
  else return options.text(spec_.name);
}

// Reads `node` (a map; absent means all defaults) against `schema`. Keys in `reserved` belong to the
// caller (e.g. "name") and are skipped; any other unknown key is an error with file:line:key.
Options validate_options(const ConfigNode& node, const OptionSchema& schema,
                         const std::vector<std::string>& reserved = {});

// One value against its spec: type, range (finite numbers only) and choices; errors carry file:line:key.
OptionValue read_option(const ConfigNode& node, const OptionSpec& spec);

// All defaults, no config needed.
Options default_options(const OptionSchema& schema);

}  // namespace xdq
