// One definition per setting (issue #14): each settings struct of tools/experiment/settings.h
// lists its fields once, in visit(), and that list makes the TOML keys, the flags of `cpoison
// train` and `cpoison poison` (tools/fields.h, tools/experiment/flags.h), `experiment --keys`
// and the configuration a cached cell is compared against. These tests hold the list to the
// struct (no member without its line, none listed twice), every field to a flag and a key, and a
// TOML value to the training configuration and the cell's key it becomes.
#include <doctest/doctest.h>


#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "algorithms/train.h"
#include "poison/generate.h"
#include "tests/support/cli.h"
#include "tools/experiment/cells.h"
#include "tools/experiment/flags.h"
#include "tools/experiment/preset.h"

using namespace cpoison;
using namespace cpoison::tools::experiment;
namespace fs = std::filesystem;

namespace {

struct Span {
  size_t at, size;
  std::string key;
};

// The bytes of one instance each listed field (or section) occupies.
class Spans {
public:
  Spans(const char* base, std::vector<Span>& out) : base_(base), out_(out) {}
  template <class T>
  void operator()(const char* key, T& v, const char*) {
    out_.push_back({(size_t)((const char*)&v - base_), sizeof(T), key});
  }
  template <class S>
  void section(const char* key, S& s) {
    out_.push_back({(size_t)((const char*)&s - base_), sizeof(S), key});
  }

private:
  const char* base_;
  std::vector<Span>& out_;
};

// "" when the listed fields cover the struct but for padding (a gap of less than 8 bytes) and
// none is listed twice; otherwise where they do not. A member added without its visit() line
// (a string, a number) leaves a gap of 8 bytes or more.
template <class S>
std::string unlisted(S s) {
  std::vector<Span> spans;
  Spans v((const char*)&s, spans);
  s.visit(v);
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.at < b.at; });
  size_t end = 0;
  std::string prev = "(start)";
  for (const Span& sp : spans) {
    if (sp.at < end) return "'" + sp.key + "' overlaps '" + prev + "' (listed twice?)";
    if (sp.at - end >= 8) return "unlisted bytes before '" + sp.key + "'";
    end = sp.at + sp.size;
    prev = sp.key;
  }
  if (sizeof(S) - end >= 8) return "unlisted bytes after '" + prev + "'";
  return "";
}

// TOML lines `prefix.key = value` for every field of a visit()-able struct (no sections).
class TomlLines {
public:
  TomlLines(std::string prefix, std::string& out) : prefix_(std::move(prefix)), out_(out) {}
  template <class T>
  void operator()(const char* key, T& v, const char*) {
    out_ += prefix_ + key + " = " + nlohmann::json(v).dump() + "\n";
  }
  template <class S>
  void section(const char*, S&) {}

private:
  std::string prefix_;
  std::string& out_;
};

// Whether `--help` output lists `flag` (followed by a space or, for a long one, a line break).
bool lists_flag(const std::string& help, const std::string& flag) {
  for (size_t at = help.find(flag); at != std::string::npos; at = help.find(flag, at + 1)) {
    const size_t end = at + flag.size();
    if (end == help.size() || help[end] == ' ' || help[end] == '\n') return true;
  }
  return false;
}

void write(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

// Flags that set every training setting to a value other than its default.
const char* kChangedTraining =
    "--epochs 3 --batch-size 8 --lr 0.25 --momentum 0.8 --nesterov --weight-decay 5e-4 --warmup-epochs 1.5 "
    "--warmup-steps -1 --warmup-start-lr 0.05 --final-lr-fraction 0.1 --augment translate-flip --translate 1 "
    "--init pytorch --checkpoint-every 2";

// The training settings of those flags (parsed as `cpoison train` parses them).
TrainSettings changed_training() {
  CLI::App app;
  TrainSettings t;
  add_training_flags(app, t);
  app.parse(kChangedTraining, false);
  return t;
}

}  // namespace

TEST_CASE("settings field lists: every member of every settings struct has its one visit() line") {
  const Settings settings;
  CHECK(unlisted(settings) == "");
  CHECK(unlisted(settings.data) == "");
  CHECK(unlisted(settings.victim) == "");
  CHECK(unlisted(settings.algo.moco) == "");
  CHECK(unlisted(settings.algo) == "");
  CHECK(unlisted(settings.poison) == "");
  CHECK(unlisted(settings.eval) == "");
  CHECK(unlisted(settings.cost) == "");
  CHECK(unlisted(settings.cost.model_factor) == "");
  // The keys are unique within each list.
  for (const auto& keys : {tools::field_keys(settings.victim), tools::field_keys(settings.algo.moco),
                           tools::field_keys(settings.poison), tools::field_keys(settings)}) {
    std::set<std::string> unique(keys.begin(), keys.end());
    CHECK(unique.size() == keys.size());
  }
}

TEST_CASE("settings field lists: every training and algorithm setting is a flag, parsed into the struct") {
  CLI::App app;
  TrainSettings t;
  AlgoSettings a;
  const tools::FieldFlags tf = add_training_flags(app, t);
  const tools::FieldFlags af = add_algo_flags(app, a);
  const auto train_keys = tools::field_keys(TrainSettings{});
  CHECK(tf.size() == train_keys.size());
  for (const auto& k : train_keys) {
    INFO(k);
    CHECK(tf.count(k) == 1);
    CHECK(app.get_option_no_throw(tools::flag_name(k)) != nullptr);
  }
  for (const auto& k : tools::field_keys(AlgoSettings{})) {
    INFO(k);
    CHECK(af.count(k) == (k == "lr" ? 0u : 1u));  // a command's --lr is the training (or attacker) lr
  }
  CHECK(tools::flag_name("final_lr_fraction") == "--final-lr-fraction");

  app.parse(std::string(kChangedTraining) + " --temperature 0.3 --queue-size 64", false);
  CHECK(t.epochs == 3);
  CHECK(t.nesterov);
  CHECK(t.augment == "translate-flip");
  CHECK(t.checkpoint_every == 2);
  CHECK(a.temperature == doctest::Approx(0.3));
  CHECK(a.queue_size == 64);
  CHECK(a.ema_momentum == -1);  // not given: the default

  // A value outside a setting's range is refused by name when parsed.
  CLI::App bad;
  TrainSettings tb;
  add_training_flags(bad, tb);
  CHECK_THROWS_AS(bad.parse("--augment translate", false), CLI::ValidationError);
  CHECK_THROWS_AS(bad.parse("--epochs 0", false), CLI::ValidationError);
}

TEST_CASE("settings field lists: the commands' --help lists every field's flag") {
  using namespace cpoison::testing;
  const std::string exe = cpoison_exe();
  if (exe.empty() || !fs::exists(exe)) return;  // only the in-process half above without the executable
  RunResult train = run_cpoison("train --help");
  RunResult poison = run_cpoison("poison --help");
  REQUIRE(train.code == 0);
  REQUIRE(poison.code == 0);
  for (const auto& k : tools::field_keys(TrainSettings{})) {
    INFO(k);
    CHECK(lists_flag(train.output, tools::flag_name(k)));
  }
  for (const auto& k : tools::field_keys(AlgoSettings{})) {
    if (k == "lr") continue;
    INFO(k);
    CHECK(lists_flag(train.output, tools::flag_name(k)));
    CHECK(lists_flag(poison.output, tools::flag_name(k)));
  }
}

TEST_CASE("settings field lists: TOML -> settings -> the cell's key and the training configuration") {
  cpoison::testing::TempDir d("fields-toml");
  TrainSettings want = changed_training();
  // Every field differs from its default, so that the round trip below covers each one.
  {
    TrainSettings def;
    const nlohmann::json w = to_json_fields(want), z = to_json_fields(def);
    for (auto it = w.begin(); it != w.end(); ++it) {
      INFO(it.key());
      CHECK(it.value() != z[it.key()]);
    }
  }
  std::string scales = "[tiny]\nwidth = 2\n[tiny.data]\ndataset = \"fashion-mnist\"\n";
  std::string victim;
  TomlLines vl("", victim);
  want.visit(vl);
  scales += "[tiny.victim]\n" + victim;
  write(d / "scales.toml", scales);
  write(d / "p.toml", R"(title = "t"
columns = [ { label = "A", victim = "simclr" } ]
rows = [ { label = "none", attack = "none" } ]
[scale.tiny]
)");
  Preset p = load_preset(d / "p.toml", "tiny", d.path.string());
  CHECK(to_json_fields(p.settings.victim) == to_json_fields(want));

  // The cell's key holds every training field but the checkpoint interval (resuming is exact).
  Plan plan = make_plan(p);
  REQUIRE(plan.victims.size() == 1);
  nlohmann::json key = to_json_fields(want);
  key.erase("checkpoint_every");
  CHECK(plan.victims[0].config["train"]["training"] == key);

  // The configuration apply_training makes of them (as `cpoison train` and the victims do).
  data::Dataset ds;
  ds.images = Tensor::zeros({4, 8, 8, 1}, DType::u8);
  ds.labels = Tensor::from_vector(std::vector<int64_t>{0, 1, 2, 3}, {4});
  ds.classes = 4;
  ds.name = "fashion-mnist";
  algorithms::TrainConfig tc;
  apply_training(p.settings.victim, ds, tc);
  CHECK(tc.epochs == 3);
  CHECK(tc.batch_size == 8);
  CHECK(tc.lr == doctest::Approx(0.25));
  CHECK(tc.momentum == doctest::Approx(0.8));
  CHECK(tc.nesterov);
  CHECK(tc.weight_decay == doctest::Approx(5e-4));
  CHECK(tc.warmup_epochs == doctest::Approx(1.5));
  CHECK(tc.warmup_steps == -1);
  CHECK(tc.warmup_start_lr == doctest::Approx(0.05));
  CHECK(tc.final_lr_fraction == doctest::Approx(0.1));
  CHECK(tc.checkpoint_every == 2);
  CHECK(tc.model_options.init == models::ModelOptions::Init::pytorch);
  CHECK(tc.augment.flip);       // translate-flip: the flip in the pipeline,
  CHECK((bool)tc.batch_hook);   // the translation a batch hook
  TrainSettings no_shift = want;
  no_shift.translate = 0;
  algorithms::TrainConfig tc0;
  apply_training(no_shift, ds, tc0);
  CHECK(!tc0.batch_hook);
}

TEST_CASE("settings field lists: every knob PoisonConfig lists is a flag of cpoison poison") {
  const auto keys = tools::field_keys(poison::PoisonConfig{});
  CHECK(std::set<std::string>(keys.begin(), keys.end()).size() == keys.size());
  CLI::App app;
  poison::PoisonConfig given;
  const tools::FieldFlags f = tools::add_flags(app, given, {}, false);
  CHECK(f.size() == keys.size());
  app.parse("--rounds 3 --separability-space features --separability-detach-spread", false);
  // Only the flags given override a recipe.
  poison::PoisonConfig recipe = poison::PoisonConfig::recipe("cpu-small-cp-c", algorithms::Algo::simclr);
  poison::PoisonConfig cfg = recipe;
  tools::copy_given(cfg, given, f);
  CHECK(cfg.rounds == 3);
  CHECK(cfg.separability_space == poison::SeparabilitySpace::features);
  CHECK(cfg.separability_detach_spread);
  CHECK(cfg.model_steps == recipe.model_steps);
  CHECK(cfg.batch_size == recipe.batch_size);

  using namespace cpoison::testing;
  const std::string exe = cpoison_exe();
  if (exe.empty() || !fs::exists(exe)) return;
  RunResult help = run_cpoison("poison --help");
  REQUIRE(help.code == 0);
  for (const auto& k : keys) {
    INFO(k);
    CHECK(lists_flag(help.output, tools::flag_name(k)));
  }
}
