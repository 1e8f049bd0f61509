#include "tools/experiment/preset.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <set>
#include <sstream>

#include "defense/defense.h"
#include "poison/generate.h"
#include "engine/error.h"
#include "tools/common.h"

namespace cpoison::tools::experiment {

namespace fs = std::filesystem;

Metric parse_metric(const std::string& s, const std::string& where) {
  if (s == "probe") return Metric::probe;
  if (s == "clean_probe") return Metric::clean_probe;
  if (s == "align_poisoned") return Metric::align_poisoned;
  if (s == "align_clean") return Metric::align_clean;
  if (s == "align_gap") return Metric::align_gap;
  fail(where, "metric '", s, "' is not one of probe, clean_probe, align_poisoned, align_clean, align_gap");
}

const char* metric_name(Metric m) {
  switch (m) {
    case Metric::probe: return "probe";
    case Metric::clean_probe: return "clean_probe";
    case Metric::align_poisoned: return "align_poisoned";
    case Metric::align_clean: return "align_clean";
    case Metric::align_gap: return "align_gap";
  }
  return "probe";
}

namespace {

std::string type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a number";
    case toml::node_type::boolean: return "a boolean";
    default: return "a date/time";
  }
}

std::string line_of(const toml::node& n) {
  auto l = n.source().begin.line;
  return l > 0 ? " (line " + std::to_string(l) + ")" : std::string();
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

// A number given as an integer, a float or a fraction string ("8/255").
double number_of(const toml::node& n, const std::string& file, const std::string& key) {
  if (auto i = n.value_exact<int64_t>()) return (double)*i;
  if (auto d = n.value_exact<double>()) return *d;
  if (auto s = n.value_exact<std::string>()) {
    try {
      return parse_fraction(*s, key);
    } catch (const Error&) {
      fail(file, "key '", key, "'", line_of(n), ": '", *s, "' is not a number or a fraction such as \"8/255\"");
    }
  }
  fail(file, "key '", key, "'", line_of(n), ": expected a number, got ", type_name(n));
}

// Reads the fields a visit() lists from one TOML table, remembering which keys it used so that
// finish() can reject the others by name.
class TomlReader {
public:
  TomlReader(const toml::table& t, std::string file, std::string prefix, std::set<std::string> ignore = {})
      : t_(t), file_(std::move(file)), prefix_(std::move(prefix)), ignore_(std::move(ignore)) {}

  void operator()(const char* key, int64_t& v, const char*) {
    if (const toml::node* n = take(key)) {
      auto i = n->value_exact<int64_t>();
      CP_CHECK(i.has_value(), file_, "key '", prefix_ + key, "'", line_of(*n), ": expected an integer, got ", type_name(*n));
      v = *i;
    }
  }
  void operator()(const char* key, uint64_t& v, const char*) {
    if (const toml::node* n = take(key)) {
      auto i = n->value_exact<int64_t>();
      CP_CHECK(i.has_value() && *i >= 0, file_, "key '", prefix_ + key, "'", line_of(*n),
               ": expected a non-negative integer, got ", type_name(*n));
      v = (uint64_t)*i;
    }
  }
  void operator()(const char* key, double& v, const char*) {
    if (const toml::node* n = take(key)) v = number_of(*n, file_, prefix_ + key);
  }
  void operator()(const char* key, bool& v, const char*) {
    if (const toml::node* n = take(key)) {
      auto b = n->value_exact<bool>();
      CP_CHECK(b.has_value(), file_, "key '", prefix_ + key, "'", line_of(*n), ": expected true or false, got ", type_name(*n));
      v = *b;
    }
  }
  void operator()(const char* key, std::string& v, const char*) {
    if (const toml::node* n = take(key)) {
      auto s = n->value_exact<std::string>();
      CP_CHECK(s.has_value(), file_, "key '", prefix_ + key, "'", line_of(*n), ": expected a string, got ", type_name(*n));
      v = *s;
    }
  }
  // One attack's knobs: a table of PoisonConfig field-list keys, checked against that list here.
  void operator()(const char* key, AttackKnobs& v, const char*) {
    const toml::node* n = take(key);
    if (!n) return;
    const std::string name = prefix_ + key;
    const toml::table* sub = n->as_table();
    CP_CHECK(sub, file_, "key '", name, "'", line_of(*n), ": expected a table of poison knobs such as { rounds = 30 }, got ",
             type_name(*n));
    nlohmann::json values = nlohmann::json::object();
    for (auto&& [k, node] : *sub) {
      const std::string knob(k.str());
      if (auto i = node.value_exact<int64_t>()) values[knob] = *i;
      else if (auto d = node.value_exact<double>()) values[knob] = *d;
      else if (auto b = node.value_exact<bool>()) values[knob] = *b;
      else if (auto t = node.value_exact<std::string>()) values[knob] = *t;
      else fail(file_, "key '", name, ".", knob, "'", line_of(node), ": expected a number, true / false or a name, got ", type_name(node));
    }
    poison::PoisonConfig trial;
    try {
      poison::set_knobs(trial, values, name);
    } catch (const Error& e) {
      fail(file_, e.what());
    }
    v.values = std::move(values);
  }
  template <class S>
  void section(const char* key, S& s) {
    if (const toml::node* n = take(key)) {
      const toml::table* sub = n->as_table();
      CP_CHECK(sub, file_, "key '", prefix_ + key, "'", line_of(*n), ": expected a table, got ", type_name(*n));
      TomlReader r(*sub, file_, prefix_ + key + ".");
      s.visit(r);
      r.finish();
    } else {
      known_.push_back(key);
    }
  }
  // Error for the first key of the table that no field claimed.
  void finish() const {
    for (auto&& [k, node] : t_) {
      std::string key(k.str());
      if (used_.count(key) || ignore_.count(key)) continue;
      fail(file_, "unknown key '", prefix_ + key, "'", line_of(node), " (known keys here: ", join(known_), ")");
    }
  }

private:
  const toml::node* take(const char* key) {
    used_.insert(key);
    known_.push_back(key);
    return t_.get(key);
  }
  const toml::table& t_;
  std::string file_, prefix_;
  std::set<std::string> ignore_, used_;
  std::vector<std::string> known_;
};

void read_settings(const toml::table& t, Settings& s, const std::string& file, const std::string& prefix,
                   const std::set<std::string>& ignore) {
  TomlReader r(t, file, prefix, ignore);
  s.visit(r);
  r.finish();
}

toml::table parse_toml(const std::string& path) {
  CP_CHECK(fs::exists(path), path, "no such preset file");
  try {
    return toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    fail(path, "TOML syntax error at line ", e.source().begin.line, ", column ", e.source().begin.column, ": ",
         std::string(e.description()));
  }
}

const std::set<std::string> kVictims{"simclr", "moco", "byol", "supervised"};
const std::set<std::string> kAttacks{"none", "random", "cp-s", "cp-c", "unlearnable", "adversarial", "aue", "aap", "pattern", "clean-only"};
const std::set<std::string> kModels{"resnet18", "resnet34", "resnet50", "vgg19", "densenet121", "mobilenetv2"};

std::string one_of(const std::set<std::string>& s) {
  return join(std::vector<std::string>(s.begin(), s.end()));
}

}  // namespace

PoisonStart parse_start(const std::string& text, const std::string& where) {
  const size_t colon = text.find(':');
  PoisonStart s{text.substr(0, colon), colon == std::string::npos ? "" : text.substr(colon + 1)};
  if (s.attack == "uniform" && colon == std::string::npos) return s;
  CP_CHECK(kAttacks.count(s.attack) && s.attack != "none" && s.attack != "clean-only" &&
               (colon == std::string::npos || s.kind == "sample" || s.kind == "class"),
           where, "'", text,
           "' is not uniform or ATTACK[:sample|class] with ATTACK one of cp-s, cp-c, unlearnable, adversarial, aue, aap, "
           "random, pattern");
  return s;
}

namespace {

// Reads one row or column (an inline table or a [[rows]] table).
Axis read_axis(const toml::node& node, const std::string& file, const std::string& key, bool is_row) {
  const toml::table* t = node.as_table();
  CP_CHECK(t, file, "key '", key, "'", line_of(node), ": expected a table such as { label = \"...\", attack = \"cp-s\" }, got ",
           type_name(node));
  Axis a;
  CellKeys& c = a.keys;
  std::set<std::string> used;
  auto str = [&](const char* k) -> std::optional<std::string> {
    used.insert(k);
    const toml::node* n = t->get(k);
    if (!n) return std::nullopt;
    auto s = n->value_exact<std::string>();
    CP_CHECK(s.has_value(), file, "key '", key, ".", k, "'", line_of(*n), ": expected a string, got ", type_name(*n));
    return *s;
  };
  auto member = [&](const char* k, const std::set<std::string>& allowed) -> std::optional<std::string> {
    auto v = str(k);
    if (v && !allowed.count(*v))
      fail(file, "key '", key, ".", k, "'", line_of(*t->get(k)), ": '", *v, "' is not one of ", one_of(allowed));
    return v;
  };
  auto num = [&](const char* k) -> std::optional<double> {
    used.insert(k);
    const toml::node* n = t->get(k);
    if (!n) return std::nullopt;
    return number_of(*n, file, key + "." + k);
  };
  auto label = str("label");
  CP_CHECK(label && !label->empty(), file, "key '", key, ".label'", line_of(node), ": every row and column needs a label");
  a.label = *label;
  c.victim = member("victim", kVictims);
  c.attack = member("attack", kAttacks);
  c.attacker = member("attacker", {"simclr", "moco", "byol", "supervised"});
  c.kind = member("kind", {"sample", "class"});
  c.model = member("model", kModels);
  c.attacker_model = member("attacker_model", kModels);
  c.dataset = str("dataset");
  c.init = member("init", {"kaiming-fan-out", "pytorch"});
  c.start = str("start");
  if (c.start) (void)parse_start(*c.start, file + ": key '" + key + ".start'" + line_of(*t->get("start")));
  c.defense = str("defense");
  if (c.defense) {
    try {
      (void)defense::parse_defense(*c.defense);
    } catch (const Error& e) {
      fail(file, "key '", key, ".defense'", line_of(*t->get("defense")), ": ", e.what());
    }
  }
  used.insert("dual_branch");
  if (const toml::node* n = t->get("dual_branch")) {
    auto b = n->value_exact<bool>();
    CP_CHECK(b.has_value(), file, "key '", key, ".dual_branch'", line_of(*n), ": expected true or false, got ", type_name(*n));
    c.dual_branch = *b;
  }
  c.ratio = num("ratio");
  if (c.ratio)
    CP_CHECK(*c.ratio > 0 && *c.ratio <= 1, file, "key '", key, ".ratio'", line_of(*t->get("ratio")), ": ", *c.ratio,
             " outside (0, 1]");
  c.eps = num("eps");
  if (c.eps)
    CP_CHECK(*c.eps > 0 && *c.eps <= 1, file, "key '", key, ".eps'", line_of(*t->get("eps")), ": ", *c.eps,
             " outside (0, 1] (8/255 = 0.0314)");
  auto labels = [&](const char* k, std::vector<std::string>& out) {
    used.insert(k);
    if (const toml::node* n = t->get(k)) {
      const toml::array* arr = n->as_array();
      CP_CHECK(arr && !arr->empty(), file, "key '", key, ".", k, "'", line_of(*n), ": expected a list of labels");
      for (const auto& e : *arr) {
        auto s = e.value_exact<std::string>();
        CP_CHECK(s.has_value(), file, "key '", key, ".", k, "'", line_of(e), ": expected label strings, got ", type_name(e));
        out.push_back(*s);
      }
    }
  };
  labels("mean_of", a.mean_of);
  labels("max_of", a.max_of);
  CP_CHECK(a.mean_of.empty() || a.max_of.empty(), file, "key '", key, "': give mean_of or max_of, not both");
  used.insert("poison_seconds");
  if (const toml::node* n = t->get("poison_seconds")) {
    auto b = n->value_exact<bool>();
    CP_CHECK(b.has_value(), file, "key '", key, ".poison_seconds'", line_of(*n), ": expected true or false, got ", type_name(*n));
    CP_CHECK(!is_row, file, "key '", key, ".poison_seconds'", line_of(*n), ": a column's key (the rows' poisons' seconds)");
    CP_CHECK(a.mean_of.empty() && a.max_of.empty(), file, "key '", key, "': poison_seconds is a column of its own");
    a.poison_seconds = *b;
  }
  used.insert("paper");
  if (const toml::node* n = t->get("paper")) {
    CP_CHECK(is_row, file, "key '", key, ".paper'", line_of(*n), ": the paper's numbers are given per row");
    const toml::array* arr = n->as_array();
    CP_CHECK(arr, file, "key '", key, ".paper'", line_of(*n), ": expected a list of numbers (\"-\" for none)");
    for (const auto& e : *arr) {
      if (auto s = e.value_exact<std::string>(); s && (*s == "-" || s->empty())) {
        a.paper.push_back(std::numeric_limits<double>::quiet_NaN());
        continue;
      }
      a.paper.push_back(number_of(e, file, key + ".paper"));
    }
  }
  for (auto&& [k, n] : *t) {
    std::string name(k.str());
    if (!used.count(name))
      fail(file, "unknown key '", key, ".", name, "'", line_of(n),
           " (a row or column takes label, victim, attack, attacker, kind, dual_branch, ratio, eps, model, "
           "attacker_model, defense, dataset, init, start, mean_of, max_of, poison_seconds",
           is_row ? ", paper)" : ")");
  }
  return a;
}

std::vector<Axis> read_axes(const toml::node& node, const std::string& file, const std::string& key, bool is_row) {
  const toml::array* arr = node.as_array();
  CP_CHECK(arr && !arr->empty(), file, "key '", key, "'", line_of(node), ": expected a non-empty list of tables");
  std::vector<Axis> out;
  for (size_t i = 0; i < arr->size(); ++i)
    out.push_back(read_axis(*arr->get(i), file, key + "[" + std::to_string(i) + "]", is_row));
  return out;
}

void check_axes(const Preset& p) {
  auto check = [&](const std::vector<Axis>& axes, const char* what) {
    std::set<std::string> labels;
    for (const auto& a : axes) {
      CP_CHECK(labels.insert(a.label).second, p.file, what, " label '", a.label, "' appears twice");
    }
    for (size_t i = 0; i < axes.size(); ++i)
      for (const auto* list : {&axes[i].mean_of, &axes[i].max_of}) {
        const char* key = list == &axes[i].mean_of ? "mean_of" : "max_of";
        for (const auto& m : *list) {
          CP_CHECK(labels.count(m), p.file, "key '", what, "[", i, "].", key, "': no ", what, " labelled '", m, "'");
          auto it = std::find_if(axes.begin(), axes.end(), [&](const Axis& a) { return a.label == m; });
          CP_CHECK(!it->computed(), p.file, "key '", what, "[", i, "].", key, "': '", m, "' is itself computed");
        }
      }
  };
  check(p.rows, "rows");
  check(p.columns, "columns");
  for (size_t i = 0; i < p.rows.size(); ++i)
    CP_CHECK(p.rows[i].paper.empty() || p.rows[i].paper.size() == p.columns.size(), p.file, "key 'rows[", i,
             "].paper': ", p.rows[i].paper.size(), " numbers for ", p.columns.size(), " columns");
}

std::string executable_dir() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : exe.parent_path().string();
}

}  // namespace

std::string presets_dir(const std::string& dir) {
  if (!dir.empty()) {
    CP_CHECK(fs::is_directory(dir), "--presets", "no such folder '", dir, "'");
    return dir;
  }
  if (const char* env = std::getenv("CPOISON_PRESETS"); env && *env) {
    CP_CHECK(fs::is_directory(env), "CPOISON_PRESETS", "no such folder '", env, "'");
    return env;
  }
  std::vector<std::string> tried{"tools/presets"};
  std::string exe = executable_dir();
  if (!exe.empty()) tried.push_back((fs::path(exe) / ".." / "tools" / "presets").lexically_normal().string());
  for (const auto& t : tried)
    if (fs::is_directory(t)) return t;
  fail("presets", "no presets folder found (tried ", join(tried), "); pass --presets DIR or set CPOISON_PRESETS");
}

std::vector<std::string> list_presets(const std::string& dir) {
  std::string d = presets_dir(dir);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(d))
    if (e.path().extension() == ".toml" && e.path().stem() != "scales") names.push_back(e.path().stem().string());
  std::sort(names.begin(), names.end());
  return names;
}

namespace {

void apply_scales_file(const std::string& path, const std::string& scale, Settings& s, bool required) {
  if (!fs::exists(path)) {
    CP_CHECK(!required, path, "no such file (the shared scale settings)");
    return;
  }
  toml::table t = parse_toml(path);
  const toml::node* n = t.get(scale);
  if (!n) {
    std::vector<std::string> names;
    for (auto&& [k, v] : t) names.push_back(std::string(k.str()));
    CP_CHECK(!required, path, "no scale '", scale, "' (scales: ", join(names), ")");
    return;
  }
  const toml::table* st = n->as_table();
  CP_CHECK(st, path, "key '", scale, "'", line_of(*n), ": expected a table, got ", type_name(*n));
  read_settings(*st, s, path, scale + ".", {});
}

}  // namespace

Settings load_scale_settings(const std::string& scale, const std::string& dir) {
  Settings s;
  std::string path = (fs::path(presets_dir(dir)) / "scales.toml").string();
  apply_scales_file(path, scale, s, true);
  s.validate(path + " [" + scale + "]");
  return s;
}

namespace {
Preset load_preset_at(const std::string& name_or_path, const std::string& scale, const std::string& dir);
}  // namespace

Preset load_preset(const std::string& name_or_path, const std::string& scale, const std::string& dir) {
  Preset p = load_preset_at(name_or_path, scale, dir);
  // Every other scale of the preset is read and validated too: an unknown key or an impossible
  // value in [scale.paper] must not wait, silently, for the day someone runs that scale. Its
  // errors name the scale ("scale.paper.victim.epochz", "[scale.paper]").
  for (const std::string& other : p.scales)
    if (other != scale) (void)load_preset_at(p.file, other, dir);
  return p;
}

namespace {
Preset load_preset_at(const std::string& name_or_path, const std::string& scale, const std::string& dir) {
  Preset p;
  bool is_path = name_or_path.size() > 5 && name_or_path.substr(name_or_path.size() - 5) == ".toml";
  if (is_path) {
    p.file = name_or_path;
  } else {
    std::string d = presets_dir(dir);
    p.file = (fs::path(d) / (name_or_path + ".toml")).string();
    if (!fs::exists(p.file)) fail("--preset", "no preset '", name_or_path, "' in ", d, " (presets: ", join(list_presets(d)), ")");
  }
  p.name = fs::path(p.file).stem().string();
  p.scale = scale;
  toml::table t = parse_toml(p.file);

  const std::set<std::string> top_keys{"title", "note", "corner", "metric", "rows", "columns", "scale"};
  for (auto&& [k, n] : t)
    if (!top_keys.count(std::string(k.str())))
      fail(p.file, "unknown key '", std::string(k.str()), "'", line_of(n), " (a preset takes title, note, corner, metric, rows, columns, scale)");
  auto top_string = [&](const char* key, std::string& out) {
    if (const toml::node* n = t.get(key)) {
      auto s = n->value_exact<std::string>();
      CP_CHECK(s.has_value(), p.file, "key '", key, "'", line_of(*n), ": expected a string, got ", type_name(*n));
      out = *s;
    }
  };
  top_string("title", p.title);
  top_string("note", p.note);
  top_string("corner", p.corner);
  std::string metric = "probe";
  top_string("metric", metric);
  p.metric = parse_metric(metric, p.file + ": key 'metric'");
  if (const toml::node* n = t.get("rows")) p.rows = read_axes(*n, p.file, "rows", true);
  if (const toml::node* n = t.get("columns")) p.columns = read_axes(*n, p.file, "columns", false);

  const toml::node* scales_node = t.get("scale");
  CP_CHECK(scales_node && scales_node->as_table(), p.file, "key 'scale': a preset needs [scale.NAME] tables "
                                                        "(e.g. [scale.cpu-small] and [scale.paper])");
  const toml::table& scales = *scales_node->as_table();
  for (auto&& [k, n] : scales) {
    p.scales.push_back(std::string(k.str()));
    CP_CHECK(n.as_table(), p.file, "key 'scale.", std::string(k.str()), "'", line_of(n), ": expected a table, got ", type_name(n));
  }
  const toml::node* sn = scales.get(scale);
  CP_CHECK(sn, "--scale", "preset ", p.name, " has no scale '", scale, "' (scales: ", join(p.scales), ")");
  const toml::table& st = *sn->as_table();

  // Settings: C++ defaults < scales.toml [scale] < this preset's [scale.NAME].
  // A preset file of one's own, kept elsewhere, still starts from the shared scales (else it
  // would silently run at the C++ defaults, the reference's full N = 5000 protocol).
  std::string shared = (fs::path(p.file).parent_path() / "scales.toml").string();
  if (!fs::exists(shared)) {
    try {
      shared = (fs::path(presets_dir(dir)) / "scales.toml").string();
    } catch (const Error&) {
      // no presets folder either: the preset's own [scale.NAME] over the C++ defaults
    }
  }
  apply_scales_file(shared, scale, p.settings, false);
  std::string prefix = "scale." + scale + ".";
  read_settings(st, p.settings, p.file, prefix, {"rows", "columns", "title", "note"});
  if (const toml::node* n = st.get("rows")) p.rows = read_axes(*n, p.file, prefix + "rows", true);
  if (const toml::node* n = st.get("columns")) p.columns = read_axes(*n, p.file, prefix + "columns", false);
  if (const toml::node* n = st.get("title")) {
    auto s = n->value_exact<std::string>();
    CP_CHECK(s.has_value(), p.file, "key '", prefix, "title'", line_of(*n), ": expected a string");
    p.title = *s;
  }
  if (const toml::node* n = st.get("note")) {
    auto s = n->value_exact<std::string>();
    CP_CHECK(s.has_value(), p.file, "key '", prefix, "note'", line_of(*n), ": expected a string");
    p.note = *s;
  }
  CP_CHECK(!p.rows.empty(), p.file, "key 'rows': the preset defines no rows");
  if (p.columns.empty()) p.columns.push_back(Axis{"accuracy", {}, {}, {}});
  check_axes(p);
  p.settings.validate(p.file + " [scale." + scale + "]");
  return p;
}
}  // namespace

}  // namespace cpoison::tools::experiment
