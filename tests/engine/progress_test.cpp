#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/progress_log.h"
#include "tests/support/temp_path.h"

using namespace cpoison;

TEST_CASE("format_duration: seconds with one decimal, then minutes and seconds, then hours and minutes") {
  CHECK(format_duration(0) == "0.0s");
  CHECK(format_duration(12.34) == "12.3s");
  CHECK(format_duration(59.9) == "59.9s");
  CHECK(format_duration(60) == "1m00s");
  CHECK(format_duration(187.6) == "3m07s");
  CHECK(format_duration(3600) == "1h00m");
  CHECK(format_duration(3600 + 5 * 60 + 59) == "1h05m");
  CHECK(format_duration(-1) == "?");
  CHECK(format_duration(NAN) == "?");
  CHECK(format_duration(INFINITY) == "?");
}

TEST_CASE("Progress: one JSONL schema for every run, and a resumed run keeps the lines of the units done") {
  const std::string path = cpoison::test::temp_path("cpoison_progress_test.jsonl").string();
  std::filesystem::remove(path);
  auto read = [&] {
    std::vector<nlohmann::ordered_json> lines;
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::ordered_json::parse(line));
    return lines;
  };
  Progress::Options o;
  o.run = "poison";
  o.tag = "poison cp-c";
  o.unit = "round";
  o.rate_unit = "views/s";
  o.total = 3;
  o.seconds = -1;  // no line on stderr
  o.log_path = path;
  {
    Progress p(o);
    for (int64_t r = 0; r < 3; ++r) {
      p.begin_unit(r);
      CHECK(p.unit_seconds() >= 0);
      p.unit_done(2.0, 10.0, "", {{"noise_loss", 1.5 + (double)r}});
    }
  }
  auto lines = read();
  REQUIRE(lines.size() == 3);
  std::vector<std::string> keys;
  for (const auto& [key, value] : lines[0].items()) keys.push_back(key);
  CHECK(keys == std::vector<std::string>{"run", "unit", "round", "rounds", "seconds", "elapsed", "eta", "rate",
                                         "rate_unit", "noise_loss"});
  for (int64_t r = 0; r < 3; ++r) {
    CHECK(lines[r]["run"] == "poison");
    CHECK(lines[r]["unit"] == "round");
    CHECK(lines[r]["round"] == r + 1);
    CHECK(lines[r]["rounds"] == 3);
    CHECK(lines[r]["seconds"] == 2.0);
    CHECK(lines[r]["rate"] == 5.0);
    CHECK(lines[r]["rate_unit"] == "views/s");
    CHECK(lines[r]["noise_loss"] == 1.5 + (double)r);
  }
  CHECK(lines[2]["eta"] == 0.0);  // nothing left after the last round

  // Resumed after round 2 (the killed run had logged round 3 too): rounds 1 and 2 are kept, round
  // 3 is logged again.
  o.start = 2;
  {
    Progress p(o);
    p.begin_unit(2);
    p.unit_done(1.0, 4.0, "", {{"noise_loss", 9.0}});
  }
  lines = read();
  REQUIRE(lines.size() == 3);
  CHECK(lines[1]["noise_loss"] == 2.5);
  CHECK(lines[2]["round"] == 3);
  CHECK(lines[2]["noise_loss"] == 9.0);
  CHECK(lines[2]["rate"] == 4.0);
  std::filesystem::remove(path);

  o.log_path = (std::filesystem::temp_directory_path() / "no-such-dir-cpoison" / "x.jsonl").string();
  CHECK_THROWS_WITH_AS(Progress{o}, doctest::Contains("cannot open the poison log"), Error);
}
