// PoisonConfig's knobs to and from JSON, driven by its one field list (PoisonConfig::visit).
#include <type_traits>

#include "engine/error.h"
#include "poison/generate.h"

namespace cpoison::poison {

namespace {

class KnobWriter {
public:
  explicit KnobWriter(nlohmann::ordered_json& out) : out_(out) {}
  template <class T>
  void operator()(const char* key, T& value, const char*) {
    out_[key] = value;
  }
  template <class T, class Parse, class Name>
  void operator()(const char* key, T& value, Parse, Name name, const char*) {
    out_[key] = std::string(name(value));
  }

private:
  nlohmann::ordered_json& out_;
};

class KnobSetter {
public:
  KnobSetter(const nlohmann::json& values, const std::string& where) : values_(values), where_(where) {}
  template <class T>
  void operator()(const char* key, T& value, const char*) {
    const nlohmann::json* v = take(key);
    if (!v) return;
    const std::string name = where_ + "." + key;
    if constexpr (std::is_same_v<T, bool>) {
      CP_CHECK(v->is_boolean(), name, "expected true or false, got ", v->dump());
      value = v->get<bool>();
    } else if constexpr (std::is_integral_v<T>) {
      CP_CHECK(v->is_number_integer(), name, "expected an integer, got ", v->dump());
      value = v->get<T>();
    } else if constexpr (std::is_floating_point_v<T>) {
      CP_CHECK(v->is_number(), name, "expected a number, got ", v->dump());
      value = v->get<T>();
    } else {
      CP_CHECK(v->is_string(), name, "expected a string, got ", v->dump());
      value = v->get<std::string>();
    }
  }
  template <class T, class Parse, class Name>
  void operator()(const char* key, T& value, Parse parse, Name, const char*) {
    const nlohmann::json* v = take(key);
    if (!v) return;
    const std::string name = where_ + "." + key;
    CP_CHECK(v->is_string(), name, "expected a name, got ", v->dump());
    value = parse(v->get<std::string>(), name);
  }
  std::vector<std::string> known;

private:
  const nlohmann::json* take(const char* key) {
    known.push_back(key);
    auto it = values_.find(key);
    return it == values_.end() ? nullptr : &*it;
  }
  const nlohmann::json& values_;
  const std::string& where_;
};

}  // namespace

nlohmann::ordered_json knob_values(const PoisonConfig& c) {
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  PoisonConfig copy = c;  // visit() takes the fields by non-const reference
  KnobWriter w(out);
  copy.visit(w);
  return out;
}

void set_knobs(PoisonConfig& c, const nlohmann::json& values, const std::string& where) {
  CP_CHECK(values.is_object(), where, "expected a table of knobs such as { rounds = 20 }, got ", values.dump());
  KnobSetter s(values, where);
  c.visit(s);
  for (auto it = values.begin(); it != values.end(); ++it) {
    bool known = false;
    for (const auto& k : s.known) known = known || k == it.key();
    if (!known) {
      std::string list;
      for (const auto& k : s.known) list += (list.empty() ? "" : ", ") + k;
      fail(where, "unknown knob '", it.key(), "' (the knobs: ", list, ")");
    }
  }
}

}  // namespace cpoison::poison
