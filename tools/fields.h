// One definition per setting: a settings struct lists its fields once, in
//   template <class V> void visit(V& v) { v("key", member, "help"); ...; v.section("key", sub); }
// with the member initialisers as defaults, and everything else is generated from that list:
// the TOML keys (tools/experiment/preset.cpp), the JSON a cached cell is compared against and
// `experiment --keys` (tools/experiment/settings.h), and, here, the command-line flags: field
// `batch_size` is `--batch-size`, with the list's help text and the struct's value as the
// default. A new setting is then one line of visit() (plus its use). An enum member is listed
// as v("key", member, parse, name, "help"), parse(text, flag) and name(value) turning it into
// and out of its name; only the visitors here (the flags) take that form so far.
#pragma once
#include <CLI/CLI.hpp>

#include <map>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

namespace cpoison::tools {

// The flag of a field key: "batch_size" -> "--batch-size".
inline std::string flag_name(const std::string& key) {
  std::string f = "--" + key;
  for (char& c : f)
    if (c == '_') c = '-';
  return f;
}

// The options add_flags registered, by field key.
using FieldFlags = std::map<std::string, CLI::Option*>;

namespace detail {

class FlagBinder {
public:
  FlagBinder(CLI::App& app, const std::set<std::string>& skip, bool show_defaults, FieldFlags& out)
      : app_(app), skip_(skip), show_(show_defaults), out_(out) {}
  template <class T>
  void operator()(const char* key, T& value, const char* help) {
    if (skip_.count(key)) return;
    CLI::Option* o = nullptr;
    if constexpr (std::is_same_v<T, bool>) {
      o = app_.add_flag(flag_name(key), value, help);
    } else {
      o = app_.add_option(flag_name(key), value, help);
      if constexpr (std::is_same_v<T, std::string>) {
        if (show_ && !value.empty()) o->capture_default_str();
      } else {
        if (show_) o->capture_default_str();
      }
    }
    out_[key] = o;
  }
  // A field given by name (an enum): parse(text, flag) reads the flag's value, name(value) shows it.
  template <class T, class Parse, class Name>
  void operator()(const char* key, T& value, Parse parse, Name name, const char* help) {
    if (skip_.count(key)) return;
    const std::string flag = flag_name(key);
    CLI::Option* o = app_.add_option_function<std::string>(
        flag, [&value, parse, flag](const std::string& text) { value = parse(text, flag); }, help);
    if (show_) o->default_str(name(value));
    out_[key] = o;
  }
  template <class S>
  void section(const char*, S&) {}  // flags are flat: a section is registered by its own add_flags call

private:
  CLI::App& app_;
  const std::set<std::string>& skip_;
  bool show_;
  FieldFlags& out_;
};

// Field addresses of one instance by key.
class Addresses {
public:
  explicit Addresses(std::map<std::string, const void*>& out) : out_(out) {}
  template <class T>
  void operator()(const char* key, T& value, const char*) {
    out_[key] = &value;
  }
  template <class T, class Parse, class Name>
  void operator()(const char* key, T& value, Parse, Name, const char* help) {
    (*this)(key, value, help);
  }
  template <class S>
  void section(const char*, S&) {}

private:
  std::map<std::string, const void*>& out_;
};

// Copies the fields of `keys` (all when empty) whose flag was given (given = true) or not given
// (given = false); a field without a flag counts as not given.
class CopyFields {
public:
  CopyFields(const std::map<std::string, const void*>& from, const FieldFlags& flags, const std::set<std::string>& keys,
             bool given)
      : from_(from), flags_(flags), keys_(keys), given_(given) {}
  template <class T>
  void operator()(const char* key, T& value, const char*) {
    if (!keys_.empty() && !keys_.count(key)) return;
    auto f = flags_.find(key);
    const bool was_given = f != flags_.end() && f->second->count() > 0;
    if (was_given == given_) value = *static_cast<const T*>(from_.at(key));
  }
  template <class T, class Parse, class Name>
  void operator()(const char* key, T& value, Parse, Name, const char* help) {
    (*this)(key, value, help);
  }
  template <class S>
  void section(const char*, S&) {}

private:
  const std::map<std::string, const void*>& from_;
  const FieldFlags& flags_;
  const std::set<std::string>& keys_;
  bool given_;
};

class KeyLister {
public:
  explicit KeyLister(std::vector<std::string>& out) : out_(out) {}
  template <class T>
  void operator()(const char* key, T&, const char*) {
    out_.push_back(key);
  }
  template <class T, class Parse, class Name>
  void operator()(const char* key, T&, Parse, Name, const char*) {
    out_.push_back(key);
  }
  template <class S>
  void section(const char* key, S&) {
    out_.push_back(std::string(key) + ".");
  }

private:
  std::vector<std::string>& out_;
};

}  // namespace detail

// Registers one option per field of `s` (sections excepted) on `app`, bound to the field (so `s`
// must outlive the parse), except the keys in `skip`. bool fields are flags; the others show
// the struct's value as their default when `show_defaults` (not when a recipe decides it).
template <class S>
FieldFlags add_flags(CLI::App& app, S& s, const std::set<std::string>& skip = {}, bool show_defaults = true) {
  FieldFlags out;
  detail::FlagBinder b(app, skip, show_defaults, out);
  s.visit(b);
  return out;
}

namespace detail {
template <class S>
void copy_fields(S& to, const S& from, const FieldFlags& flags, const std::set<std::string>& keys, bool given) {
  S src = from;
  std::map<std::string, const void*> at;
  Addresses a(at);
  src.visit(a);
  CopyFields c(at, flags, keys, given);
  to.visit(c);
}
}  // namespace detail

// Copies the fields named in `keys` from `from` to `to` unless their flag (in `flags`) was given:
// a preset that changes defaults while explicit flags win.
template <class S>
void copy_unset(S& to, const S& from, const FieldFlags& flags, const std::set<std::string>& keys) {
  detail::copy_fields(to, from, flags, keys, false);
}

// Copies every field whose flag was given from `from` (the struct the flags are bound to) to
// `to`: explicit flags over a recipe.
template <class S>
void copy_given(S& to, const S& from, const FieldFlags& flags) {
  detail::copy_fields(to, from, flags, {}, true);
}

// The keys of a struct's fields in list order (a section as "name.").
template <class S>
std::vector<std::string> field_keys(S s) {
  std::vector<std::string> out;
  detail::KeyLister l(out);
  s.visit(l);
  return out;
}

}  // namespace cpoison::tools
