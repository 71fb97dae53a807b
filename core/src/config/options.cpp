#include "xdq/config/options.h"

#include <cmath>
#include <sstream>

#include "xdq/config/node.h"
#include "xdq/error.h"

namespace xdq {

const char* to_string(OptionType type) {
  switch (type) {
    case OptionType::Number: return "number";
    case OptionType::Integer: return "integer";
    case OptionType::Bool: return "bool";
    case OptionType::String: return "string";
  }
  return "?";
}

std::string to_string(const OptionValue& value) {
  struct Visitor {
    std::string operator()(bool b) const { return b ? "true" : "false"; }
    std::string operator()(std::int64_t i) const { return std::to_string(i); }
    std::string operator()(double d) const {
      std::ostringstream out;
      out << d;
      return out.str();
    }
    std::string operator()(const std::string& s) const { return s; }
  };
  return std::visit(Visitor{}, value);
}

OptionSpec OptionSpec::number(std::string name, double fallback, std::string doc) {
  OptionSpec s;
  s.name = std::move(name);
  s.type = OptionType::Number;
  s.default_value = fallback;
  s.doc = std::move(doc);
  return s;
}
OptionSpec OptionSpec::integer(std::string name, std::int64_t fallback, std::string doc) {
  OptionSpec s = number(std::move(name), 0, std::move(doc));
  s.type = OptionType::Integer;
  s.default_value = fallback;
  return s;
}
OptionSpec OptionSpec::flag(std::string name, bool fallback, std::string doc) {
  OptionSpec s = number(std::move(name), 0, std::move(doc));
  s.type = OptionType::Bool;
  s.default_value = fallback;
  return s;
}
OptionSpec OptionSpec::text(std::string name, std::string fallback, std::string doc) {
  OptionSpec s = number(std::move(name), 0, std::move(doc));
  s.type = OptionType::String;
  s.default_value = std::move(fallback);
  return s;
}
OptionSpec& OptionSpec::range(double lo, double hi, bool lo_exclusive) {
  min = lo;
  max = hi;
  min_exclusive = lo_exclusive;
  return *this;
}
OptionSpec& OptionSpec::one_of(std::vector<std::string> allowed) {
  choices = std::move(allowed);
  return *this;
}

std::string OptionSpec::range_text() const {
  std::ostringstream out;
  if (type == OptionType::String) {
    if (choices.empty()) return "";
    out << "one of: ";
    for (std::size_t i = 0; i < choices.size(); ++i) out << (i ? ", " : "") << choices[i];
    return out.str();
  }
  if (type == OptionType::Bool || (std::isinf(min) && std::isinf(max))) return "";
  if (std::isinf(max)) {
    out << (min_exclusive ? "> " : ">= ") << min;
    return out.str();
  }
  out << (min_exclusive ? "(" : "[") << min << ", " << max << "]";
  return out.str();
}

const OptionValue& Options::at(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) throw Error("option '" + name + "' is not declared in the plugin's schema");
  return it->second;
}
double Options::number(const std::string& name) const {
  const OptionValue& v = at(name);
  if (auto i = std::get_if<std::int64_t>(&v)) return static_cast<double>(*i);
  return std::get<double>(v);
}
std::int64_t Options::integer(const std::string& name) const { return std::get<std::int64_t>(at(name)); }
bool Options::flag(const std::string& name) const { return std::get<bool>(at(name)); }
const std::string& Options::text(const std::string& name) const { return std::get<std::string>(at(name)); }

OptionValue read_option(const ConfigNode& node, const OptionSpec& spec) {
  const std::string range = spec.range_text();
  const std::string expected = std::string("expected ") + (spec.type == OptionType::Integer ? "an integer" : "a number") +
                               (range.empty() ? "" : range[0] == '[' || range[0] == '(' ? " in " + range : " " + range);
  auto check_range = [&](double v, const std::string& text) {
    const bool low_ok = spec.min_exclusive ? v > spec.min : v >= spec.min;
    if (!low_ok || v > spec.max) node.fail(expected + ", got " + text);
  };
  switch (spec.type) {
    case OptionType::Number: {
      const double v = node.as_double();  // finite
      check_range(v, node.yaml().Scalar());
      return v;
    }
    case OptionType::Integer: {
      const long long v = node.as_int();
      check_range(static_cast<double>(v), std::to_string(v));
      return static_cast<std::int64_t>(v);
    }
    case OptionType::Bool: return node.as_bool();
    case OptionType::String: {
      std::string v = node.as_string();
      if (!spec.choices.empty()) {
        bool ok = false;
        for (const auto& c : spec.choices) ok = ok || c == v;
        if (!ok) node.fail("expected " + range + ", got '" + v + "'");
      }
      return v;
    }
  }
  return 0.0;
}

Options default_options(const OptionSchema& schema) {
  std::map<std::string, OptionValue> values;
  for (const auto& spec : schema) values[spec.name] = spec.default_value;
  return Options(std::move(values));
}

Options validate_options(const ConfigNode& node, const OptionSchema& schema, const std::vector<std::string>& reserved) {
  if (!node.defined()) return default_options(schema);
  std::vector<std::string> allowed = reserved;
  for (const auto& spec : schema) allowed.push_back(spec.name);
  node.check_keys(allowed);
  std::map<std::string, OptionValue> values;
  for (const auto& spec : schema)
    values[spec.name] = node.has(spec.name) ? read_option(node[spec.name], spec) : spec.default_value;
  return Options(std::move(values));
}

}  // namespace xdq
