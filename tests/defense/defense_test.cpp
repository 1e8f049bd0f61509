// Defence specifications (accepted forms, defaults, canonical round trip, rejected forms with
// their messages), the training batch hook, and offline dataset preprocessing (byte-exact
// identity, batch-size independence, labels kept, errors). Layout: batches [N, C, H, W],
// datasets [N, H, W, C] u8.
#include <doctest/doctest.h>

#include <cmath>

#include "defense/defense.h"
#include "engine/ops/ops.h"

using namespace cpoison;
using namespace cpoison::defense;

namespace {

data::Dataset tiny_dataset(int64_t n, int64_t h, int64_t w, int64_t c) {
  std::vector<uint8_t> pixels(n * h * w * c);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = (uint8_t)((i * 37 + 11) % 256);
  std::vector<int64_t> labels(n);
  for (int64_t i = 0; i < n; ++i) labels[i] = i % 3;
  data::Dataset ds;
  ds.images = Tensor::from_vector(pixels, {n, h, w, c});
  ds.labels = Tensor::from_vector(labels, {n});
  ds.classes = 3;
  ds.name = "tiny";
  ds.source = "test";
  return ds;
}

}  // namespace

TEST_CASE("parse_defense: accepted specifications and their values") {
  Defense d = parse_defense("usvt:p=0.25,keep=0.8,mode=channel");
  CHECK(d.kind == DefenseKind::usvt);
  CHECK(d.usvt.p == 0.25);
  CHECK(d.usvt.keep == 0.8);
  CHECK(d.usvt.mode == UsvtMode::channel);
  CHECK(d.usvt.threshold == UsvtThreshold::none);

  d = parse_defense("usvt:p=0.25,threshold=chatterjee");
  CHECK(d.usvt.threshold == UsvtThreshold::chatterjee);
  CHECK(d.usvt.keep == 1.0);  // the threshold alone decides
  CHECK(d.usvt.eta == 0.01);
  d = parse_defense("usvt:threshold=chatterjee,eta=0.5,keep=0.5,mode=stacked");
  CHECK((d.usvt.eta == 0.5 && d.usvt.keep == 0.5 && d.usvt.mode == UsvtMode::stacked));
  d = parse_defense("usvt:threshold=2.5");
  CHECK((d.usvt.threshold == UsvtThreshold::absolute && d.usvt.threshold_value == 2.5));
  d = parse_defense("usvt");
  CHECK((d.usvt.p == 0.25 && d.usvt.keep == 0.8 && d.usvt.mode == UsvtMode::channel));

  d = parse_defense("noise:std=0.03");
  CHECK((d.kind == DefenseKind::noise && d.noise.std == 0.03 && d.noise.clip));
  d = parse_defense("noise:std=8/255,clip=off");
  CHECK(d.noise.std == doctest::Approx(8.0 / 255.0));
  CHECK_FALSE(d.noise.clip);
  d = parse_defense("smooth:k=3,sigma=0.5");
  CHECK((d.kind == DefenseKind::smooth && d.smooth.kernel == 3 && d.smooth.sigma == 0.5));
  d = parse_defense(" smooth : kernel = 7 ");
  CHECK(d.smooth.kernel == 7);
  d = parse_defense("cutout:size=8");
  CHECK((d.kind == DefenseKind::cutout && d.cutout.size == 8));
  CHECK(parse_defense("none").kind == DefenseKind::none);
  d = parse_defense("adv:eps=4/255,alpha=1/255,steps=3,bn=eval,both=1,clean=0.5");
  CHECK(d.kind == DefenseKind::adversarial);
  CHECK(d.adversarial.eps == doctest::Approx(4.0 / 255.0));
  CHECK(d.adversarial.alpha == doctest::Approx(1.0 / 255.0));
  CHECK((d.adversarial.steps == 3 && d.adversarial.bn == AdversarialOptions::BnMode::eval && d.adversarial.both_views));
  CHECK(d.adversarial.clean_weight == 0.5);
}

TEST_CASE("parse_defense: spec() is canonical and parses back to itself") {
  for (const char* s : {"none", "usvt", "usvt:p=0.1,keep=0.5,mode=stacked", "usvt:threshold=chatterjee,eta=0.2",
                        "usvt:threshold=3", "noise:std=8/255", "smooth:k=5", "cutout:size=12", "adv:steps=2,clean=1"}) {
    const std::string canonical = parse_defense(s).spec();
    CHECK(parse_defense(canonical).spec() == canonical);
  }
  CHECK(parse_defense("usvt").spec() == "usvt:p=0.25,keep=0.8,mode=channel");
  CHECK(parse_defense("smooth:k=3").spec() == "smooth:k=3,sigma=0.8");
  CHECK(parse_defense("cutout").spec() == "cutout:size=16");
}

TEST_CASE("parse_defense: rejected specifications name the key and the value") {
  auto rejects = [](const std::string& spec, const std::string& piece) {
    INFO(spec);
    CHECK_THROWS_WITH_AS(parse_defense(spec), doctest::Contains(piece.c_str()), Error);
  };
  rejects("usvt:p=1", "p = 1: the drop probability must be in [0, 1)");
  rejects("usvt:p=-0.1", "p = -0.1");
  rejects("usvt:keep=1.5", "keep = 1.5");
  rejects("usvt:threshold=-2", "threshold = -2");
  rejects("usvt:eta=0.1", "key 'eta' = '0.1' applies only with threshold=chatterjee");
  rejects("usvt:mode=diagonal", "key 'mode' = 'diagonal' is not one of channel, stacked");
  rejects("usvt:foo=1", "unknown key 'foo' = '1' for usvt");
  rejects("usvt:p=abc", "key 'p' = 'abc' is not a finite number");
  rejects("usvt:p=1/0", "key 'p' = '1/0' divides by zero");
  rejects("usvt:p=0.1,p=0.2", "key 'p' is given twice");
  rejects("usvt:p", "parameter 'p' is not KEY=VALUE");
  rejects("usvt:", "nothing after ':'");
  rejects("smooth:k=4", "k = 4: the kernel size must be odd");
  rejects("smooth:k=0", "k = 0");
  rejects("smooth:k=2.5", "key 'k' = '2.5' is not an integer");
  rejects("smooth:k=3,kernel=3", "give the kernel size once");
  rejects("noise:std=-0.5", "std = -0.5");
  rejects("noise:clip=maybe", "key 'clip' = 'maybe' is not a switch");
  rejects("cutout:size=-3", "size = -3");
  rejects("adv:eps=-1", "eps = -1");
  rejects("adv:steps=-2", "steps = -2");
  rejects("none:p=1", "unknown key 'p' = '1' for none (it takes no parameters)");
  rejects("blur:k=3", "unknown defence 'blur'");
  rejects("", "unknown defence ''");
  CHECK_THROWS_WITH_AS(parse_defense("usvt:p=1"), doctest::Contains("defense 'usvt:p=1'"), Error);
}

TEST_CASE("defense_batch_hook: the defence as a training-time transform") {
  CHECK_FALSE((bool)defense_batch_hook(parse_defense("none")));
  CHECK_THROWS_WITH_AS(defense_batch_hook(parse_defense("adv")), doctest::Contains("training mode"), Error);
  Generator src(1);
  Tensor x = uniform({4, 3, 8, 8}, 0.0, 1.0, src);
  data::Batch batch;
  for (const char* s : {"usvt:p=0.25,keep=0.5", "noise:std=0.1", "smooth:k=3", "cutout:size=4"}) {
    INFO(s);
    Defense d = parse_defense(s);
    auto hook = defense_batch_hook(d);
    REQUIRE((bool)hook);
    Generator g1(2), g2(2);
    Tensor via_hook = hook(x, batch, g1);
    Tensor direct = apply_defense(d, x, g2);
    CHECK(via_hook.shape() == x.shape());
    CHECK(g1.offset() == g2.offset());
    auto a = via_hook.to_vector<double>(), b = direct.to_vector<double>();
    CHECK(a == b);
    double lo = 1, hi = 0, diff = 0;
    auto xv = x.to_vector<double>();
    for (size_t i = 0; i < a.size(); ++i) lo = std::min(lo, a[i]), hi = std::max(hi, a[i]), diff += std::abs(a[i] - xv[i]);
    CHECK(lo >= 0.0);
    CHECK(hi <= 1.0);
    CHECK(diff > 0);  // every defence changes the batch
  }
  CHECK_THROWS_WITH_AS(apply_defense(parse_defense("adv"), x, src), doctest::Contains("not a batch transform"), Error);
}

TEST_CASE("defend_dataset: offline preprocessing") {
  data::Dataset ds = tiny_dataset(5, 6, 6, 3);
  // A defence that changes nothing returns the same bytes (round(255 * k / 255) = k).
  data::Dataset same = defend_dataset(ds, parse_defense("noise:std=0"), 1, 2);
  CHECK(same.images.to_vector<int64_t>() == ds.images.to_vector<int64_t>());
  CHECK(same.labels.to_vector<int64_t>() == ds.labels.to_vector<int64_t>());
  CHECK((same.name == "tiny" && same.classes == 3));
  CHECK(same.source.find("noise:std=0") != std::string::npos);
  // The random draws go image by image, so the batch size does not matter.
  for (const char* s : {"usvt:p=0.25,keep=0.5,mode=stacked", "noise:std=0.05", "cutout:size=3"}) {
    INFO(s);
    Defense d = parse_defense(s);
    auto a = defend_dataset(ds, d, 7, 2).images.to_vector<int64_t>();
    auto b = defend_dataset(ds, d, 7, 5).images.to_vector<int64_t>();
    auto c = defend_dataset(ds, d, 8, 5).images.to_vector<int64_t>();
    CHECK(a == b);
    CHECK(a != c);
    CHECK(a != ds.images.to_vector<int64_t>());
  }
  // The bytes are the float defence quantised by round(255 x).
  Defense smooth = parse_defense("smooth:k=3");
  Tensor x = data::to_float_nchw(ds.images, Device::cpu);
  auto want = gaussian_smooth(x, smooth.smooth).to_vector<double>();
  auto got = defend_dataset(ds, smooth, 0, 3).images.to_vector<int64_t>();
  const int64_t H = 6, W = 6, C = 3;
  int mismatches = 0;
  for (int64_t n = 0; n < 5; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t w = 0; w < W; ++w)
          mismatches += got[((n * H + h) * W + w) * C + c] != (int64_t)std::nearbyint(255.0 * want[((n * C + c) * H + h) * W + w]);
  CHECK(mismatches == 0);

  CHECK_THROWS_WITH_AS(defend_dataset(ds, parse_defense("adv"), 0), doctest::Contains("training mode"), Error);
  CHECK_THROWS_WITH_AS(defend_dataset(ds, parse_defense("none"), 0, 0), doctest::Contains("batch size must be >= 1"),
                       Error);
  CHECK_THROWS_WITH_AS(defend_dataset(data::Dataset{}, parse_defense("none"), 0), doctest::Contains("non-empty"), Error);
}
