#include "tools/experiment/detect.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>

#include "algorithms/train.h"
#include "engine/error.h"
#include "engine/io/hdf5.h"
#include "engine/rng.h"
#include "poison/apply.h"
#include "tools/common.h"
#include "tools/experiment/cells.h"
#include "tools/experiment/inputs.h"
#include "tools/experiment/runner.h"

namespace cpoison::tools::experiment {

namespace fs = std::filesystem;

namespace {

// The images the scoring models see: x [n, D] (normalised pixels, HWC order), labels y [n].
struct Design {
  std::vector<float> x;
  std::vector<int64_t> y;
  int64_t n = 0, d = 0, k = 0;
};

Design design_matrix(const data::Dataset& ds, int64_t max_images, uint64_t seed, bool highpass) {
  CP_CHECK(ds.size() > 0, ds.name, "no images to score");
  const int64_t N = ds.size(), H = ds.height(), W = ds.width(), C = ds.channels();
  std::vector<int64_t> rows(N);
  for (int64_t i = 0; i < N; ++i) rows[i] = i;
  if (max_images > 0 && N > max_images) {
    // A seeded subset (Fisher-Yates prefix), in ascending order.
    Generator g(seed, 0xDE7E);
    for (int64_t i = 0; i < max_images; ++i) std::swap(rows[i], rows[g.randint(i, N)]);
    rows.resize(max_images);
    std::sort(rows.begin(), rows.end());
  }
  std::vector<double> mean, stddev;
  algorithms::dataset_normalization(ds, mean, stddev);
  const Tensor images = ds.images.to(Device::cpu).contiguous();
  const std::vector<int64_t> labels = ds.labels.to(Device::cpu).to_vector<int64_t>();
  const uint8_t* px = images.data<uint8_t>();
  Design d;
  d.n = (int64_t)rows.size();
  d.d = H * W * C;
  d.k = ds.classes;
  d.x.resize(d.n * d.d);
  d.y.resize(d.n);
  double sum_sq = 0;
  for (int64_t i = 0; i < d.n; ++i) {
    const int64_t r = rows[i];
    CP_CHECK(labels[r] >= 0 && labels[r] < d.k, ds.name, "row ", r, " has label ", labels[r], ", outside [0, ", d.k,
             "): fit-speed scoring needs labelled images");
    d.y[i] = labels[r];
    const uint8_t* im = px + r * d.d;
    float* x = d.x.data() + i * d.d;
    if (!highpass) {
      for (int64_t j = 0; j < d.d; ++j) {
        const int64_t c = j % C;
        x[j] = (float)(((double)im[j] / 255.0 - mean[c]) / stddev[c]);
      }
      continue;
    }
    // The pixel minus the mean of its 3x3 neighbourhood (edges: the neighbours that exist).
    for (int64_t y = 0; y < H; ++y)
      for (int64_t xx = 0; xx < W; ++xx)
        for (int64_t c = 0; c < C; ++c) {
          double around = 0;
          int count = 0;
          for (int64_t dy = -1; dy <= 1; ++dy)
            for (int64_t dx = -1; dx <= 1; ++dx) {
              const int64_t yy = y + dy, xs = xx + dx;
              if (yy < 0 || yy >= H || xs < 0 || xs >= W) continue;
              around += im[(yy * W + xs) * C + c], ++count;
            }
          const double v = ((double)im[(y * W + xx) * C + c] - around / count) / 255.0;
          x[(y * W + xx) * C + c] = (float)v;
          sum_sq += v * v;
        }
  }
  if (highpass && sum_sq > 0) {
    // Unit mean square, so that the learning rate means the same as on standardised pixels.
    const float scale = (float)(1.0 / std::sqrt(sum_sq / (double)(d.n * d.d)));
    for (auto& v : d.x) v *= scale;
  }
  return d;
}

// SGD with momentum on softmax cross-entropy; hidden == 0: a linear model x -> W x + b, else
// x -> W2 relu(W1 x + b1) + b2. Returns the training accuracy (%) after o.epochs passes.
double fit_accuracy(const Design& D, int64_t hidden, const FitSpeedOptions& o, uint64_t seed, uint32_t stream) {
  const int64_t n = D.n, d = D.d, k = D.k;
  const bool mlp = hidden > 0;
  const int64_t h = mlp ? hidden : 0;
  const int64_t in1 = d, out1 = mlp ? h : k;  // first layer
  Generator g(seed, stream);
  auto uniform = [&g](std::vector<float>& w, double bound) {
    for (auto& v : w) v = (float)((2.0 * g.uniform01() - 1.0) * bound);
  };
  // nn.Linear's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases.
  std::vector<float> w1(out1 * in1), b1(out1), w2(mlp ? k * h : 0), b2(mlp ? k : 0);
  uniform(w1, 1.0 / std::sqrt((double)in1));
  uniform(b1, 1.0 / std::sqrt((double)in1));
  if (mlp) {
    uniform(w2, 1.0 / std::sqrt((double)h));
    uniform(b2, 1.0 / std::sqrt((double)h));
  }
  std::vector<float> vw1(w1.size()), vb1(b1.size()), vw2(w2.size()), vb2(b2.size());
  std::vector<float> gw1(w1.size()), gb1(b1.size()), gw2(w2.size()), gb2(b2.size());
  std::vector<float> a1(out1), logits(k), dlog(k), da1(out1);

  // Forward pass of row i: a1 = first layer (pre-activation), logits; returns the argmax.
  auto forward = [&](int64_t i) {
    const float* x = D.x.data() + i * d;
    for (int64_t u = 0; u < out1; ++u) {
      const float* w = w1.data() + u * in1;
      float s = b1[u];
      for (int64_t j = 0; j < in1; ++j) s += w[j] * x[j];
      a1[u] = s;
    }
    if (mlp) {
      for (int64_t c = 0; c < k; ++c) {
        const float* w = w2.data() + c * h;
        float s = b2[c];
        for (int64_t u = 0; u < h; ++u) s += w[u] * std::max(a1[u], 0.0f);
        logits[c] = s;
      }
    } else {
      std::copy(a1.begin(), a1.end(), logits.begin());
    }
    return (int64_t)(std::max_element(logits.begin(), logits.end()) - logits.begin());
  };

  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  const int64_t bs = std::max<int64_t>(1, std::min(o.batch_size, n));
  for (int64_t epoch = 0; epoch < o.epochs; ++epoch) {
    for (int64_t i = n - 1; i > 0; --i) std::swap(order[i], order[g.randint(0, i + 1)]);
    for (int64_t start = 0; start < n; start += bs) {
      const int64_t end = std::min(n, start + bs);
      std::fill(gw1.begin(), gw1.end(), 0.0f), std::fill(gb1.begin(), gb1.end(), 0.0f);
      std::fill(gw2.begin(), gw2.end(), 0.0f), std::fill(gb2.begin(), gb2.end(), 0.0f);
      const float scale = 1.0f / (float)(end - start);
      for (int64_t b = start; b < end; ++b) {
        const int64_t i = order[b];
        forward(i);
        // d(cross-entropy)/d(logits) = softmax - one-hot, averaged over the batch.
        const float top = *std::max_element(logits.begin(), logits.end());
        float z = 0;
        for (int64_t c = 0; c < k; ++c) z += (dlog[c] = std::exp(logits[c] - top));
        for (int64_t c = 0; c < k; ++c) dlog[c] = (dlog[c] / z - (c == D.y[i] ? 1.0f : 0.0f)) * scale;
        if (mlp) {
          std::fill(da1.begin(), da1.end(), 0.0f);
          for (int64_t c = 0; c < k; ++c) {
            gb2[c] += dlog[c];
            float* gw = gw2.data() + c * h;
            const float* w = w2.data() + c * h;
            for (int64_t u = 0; u < h; ++u) {
              gw[u] += dlog[c] * std::max(a1[u], 0.0f);
              da1[u] += dlog[c] * w[u];
            }
          }
          for (int64_t u = 0; u < h; ++u)
            if (a1[u] <= 0) da1[u] = 0;
        } else {
          std::copy(dlog.begin(), dlog.end(), da1.begin());
        }
        const float* x = D.x.data() + i * d;
        for (int64_t u = 0; u < out1; ++u) {
          if (da1[u] == 0) continue;
          gb1[u] += da1[u];
          float* gw = gw1.data() + u * in1;
          for (int64_t j = 0; j < in1; ++j) gw[j] += da1[u] * x[j];
        }
      }
      auto step = [&o](std::vector<float>& w, std::vector<float>& v, const std::vector<float>& gr) {
        for (size_t j = 0; j < w.size(); ++j) {
          v[j] = (float)o.momentum * v[j] + gr[j];
          w[j] -= (float)o.lr * v[j];
        }
      };
      step(w1, vw1, gw1), step(b1, vb1, gb1), step(w2, vw2, gw2), step(b2, vb2, gb2);
    }
  }
  int64_t right = 0;
  for (int64_t i = 0; i < n; ++i) right += forward(i) == D.y[i];
  return 100.0 * (double)right / (double)n;
}

std::string fixed(double v, int digits) {
  if (!std::isfinite(v)) return "–";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

}  // namespace

FitSpeedScore fit_speed_score(const data::Dataset& ds, const FitSpeedOptions& o, uint64_t seed) {
  CP_CHECK(o.epochs >= 1 && o.batch_size >= 1 && o.lr > 0 && o.hidden >= 1, "fit_speed_score",
           "epochs, batch_size, hidden must be >= 1 and lr > 0");
  CP_CHECK(o.input == "pixels" || o.input == "highpass", "fit_speed_score", "input must be pixels or highpass, not '",
           o.input, "'");
  const Design d = design_matrix(ds, o.max_images, seed, o.input == "highpass");
  FitSpeedScore s;
  s.images = d.n;
  s.linear = fit_accuracy(d, 0, o, seed, 0xF17A);
  s.mlp = fit_accuracy(d, o.hidden, o, seed, 0xF17B);
  s.score = std::max(s.linear, s.mlp);
  return s;
}

Calibration calibrate_threshold(const std::vector<double>& xs, double k, double min_sd) {
  CP_CHECK(!xs.empty(), "calibrate_threshold", "no clean scores to calibrate on");
  Calibration c;
  c.n = (int64_t)xs.size();
  c.max = -std::numeric_limits<double>::infinity();
  for (double x : xs) c.mean += x, c.max = std::max(c.max, x);
  c.mean /= (double)c.n;
  if (c.n > 1) {
    double ss = 0;
    for (double x : xs) ss += (x - c.mean) * (x - c.mean);
    c.sd = std::sqrt(ss / (double)(c.n - 1));
  }
  c.threshold = c.mean + k * std::max(c.sd, min_sd);
  return c;
}

DetectReport run_detect(const DetectOptions& o) {
  CP_CHECK(!o.file.empty(), "detect", "give the poison or dataset file to examine");
  std::error_code ec;
  CP_CHECK(fs::exists(o.file, ec), o.file, "does not exist");
  CP_CHECK(o.calibration_seeds >= 1, "--calibration-seeds", "must be >= 1");
  io::H5Reader reader(o.file);
  const bool is_poison = reader.has("delta");
  CP_CHECK(is_poison || reader.has("images") || reader.has("train/images"), o.file,
           "is neither a poison file (no /delta) nor a dataset file (no /images or /train/images)");

  // The clean reference and the data under test.
  DataOptions ref;
  ref.data_root = o.data_root;
  data::Dataset clean, tested;
  poison::Poison made;
  if (is_poison) {
    made = poison::load_poison(o.file);
    const io::Attrs a = reader.file_attrs();
    ref.data = attr_text(a, "dataset");
    CP_CHECK(!ref.data.empty(), o.file, "records no dataset (attribute 'dataset'): nothing to calibrate on");
    ref.subset = made.subset;
    ref.subset_seed = (uint64_t)attr_number(a, "subset_seed", 0);
    ref.pad_to = attr_number(a, "pad_to", 0);
    ref.channels = attr_number(a, "channels", 0);
    clean = load_train(ref);
    poison::check_fingerprint(made, clean, o.file, false);
    tested = poison::apply_poison(clean, made);
  } else {
    CP_CHECK(!o.reference.empty(), "--reference",
             "a dataset file needs the clean dataset to calibrate on (--reference NAME or FILE, with --reference-subset)");
    ref.data = o.reference;
    ref.subset = o.reference_subset;
    ref.subset_seed = (uint64_t)o.reference_subset_seed;
    clean = load_train(ref);
    DataOptions t;
    t.data = o.file;
    tested = load_train(t);
    CP_CHECK(tested.height() == clean.height() && tested.width() == clean.width() &&
                 tested.channels() == clean.channels() && tested.classes == clean.classes,
             o.file, "its images (", tested.height(), "x", tested.width(), "x", tested.channels(), ", ", tested.classes,
             " classes) are not of the reference's kind (", clean.height(), "x", clean.width(), "x", clean.channels(), ", ",
             clean.classes, " classes, ", ref.describe(), ")");
    if (tested.mean.empty()) tested.mean = clean.mean, tested.std = clean.std;
  }
  // Both sets are normalised alike: the clean data's constants.
  tested.mean = clean.mean.empty() ? tested.mean : clean.mean;
  tested.std = clean.std.empty() ? tested.std : clean.std;

  DetectReport rep;
  // (a) fit speed.
  const FitSpeedScore score = fit_speed_score(tested, o.fit, o.seed);
  std::vector<double> clean_scores;
  nlohmann::json clean_json = nlohmann::json::array();
  for (int64_t i = 0; i < o.calibration_seeds; ++i) {
    const uint64_t seed = 1000 + (uint64_t)i;
    const FitSpeedScore c = fit_speed_score(clean, o.fit, seed);
    clean_scores.push_back(c.score);
    clean_json.push_back({{"seed", seed}, {"linear", c.linear}, {"mlp", c.mlp}, {"score", c.score}});
  }
  const Calibration cal = calibrate_threshold(clean_scores, o.k, o.min_sd);
  const bool fit_poisoned = score.score > cal.threshold;
  rep.poisoned = fit_poisoned;
  nlohmann::json fit{{"score", score.score},
                     {"linear", score.linear},
                     {"mlp", score.mlp},
                     {"images", score.images},
                     {"seed", o.seed},
                     {"threshold", cal.threshold},
                     {"clean_mean", cal.mean},
                     {"clean_sd", cal.sd},
                     {"clean_max", cal.max},
                     {"clean_scores", clean_json},
                     {"verdict", fit_poisoned ? "poisoned" : "clean"},
                     {"options",
                      {{"epochs", o.fit.epochs},
                       {"input", o.fit.input},
                       {"batch_size", o.fit.batch_size},
                       {"lr", o.fit.lr},
                       {"momentum", o.fit.momentum},
                       {"hidden", o.fit.hidden},
                       {"max_images", o.fit.max_images},
                       {"k", o.k},
                       {"min_sd", o.min_sd}}}};

  std::string md = "### Poison detection: `" + o.file + "`\n\n| test | score | threshold | clean calibration | verdict |\n"
                   "|---|---:|---:|---|---|\n";
  md += "| fit speed (training accuracy %, linear / two-layer: " + fixed(score.linear, 1) + " / " + fixed(score.mlp, 1) +
        ") | " + fixed(score.score, 1) + " | " + fixed(cal.threshold, 1) + " | " + fixed(cal.mean, 1) + " ± " +
        fixed(cal.sd, 1) + " over " + std::to_string(cal.n) + " seeds (max " + fixed(cal.max, 1) + ") | " +
        (fit_poisoned ? "**poisoned**" : "clean") + " |\n";

  nlohmann::json align = nullptr;
  if (o.alignment) {
    CP_CHECK(is_poison, "--alignment", "needs a poison file (the gap compares poisoned with clean views)");
    Settings s = load_scale_settings(o.scale, o.presets);
    DataSettings data = s.data;
    data.dataset = ref.data;
    data.subset = ref.subset;
    data.subset_seed = (int64_t)ref.subset_seed;
    data.pad_to = ref.pad_to;
    data.channels = ref.channels;
    s.victim.epochs = o.simclr_epochs;
    s.eval.alignment_images = std::max<int64_t>(s.eval.alignment_images, 1);
    const std::string file = o.file;
    const double eps = made.eps;
    auto plan_of = [file, data, eps](const Preset& p) {
      Plan plan;
      plan.poisons.push_back(make_file_poison_job(file, data, p.settings));
      plan.poisons.push_back(make_poison_job("random", "none", "sample", true, eps, 1.0, p.settings.model, data, p.settings));
      plan.grid = {{0}, {1}};
      for (const auto& pj : plan.poisons)
        plan.victims.push_back(make_victim_job("simclr", p.settings.model, data, &pj, false, 1.0, "none", p.settings));
      return plan;
    };
    Preset preset;
    preset.name = fs::path(data.dataset).stem().string() + "-" + data_fingerprint(clean).substr(0, 8);
    preset.scale = o.scale;
    preset.settings = s;
    preset.metric = Metric::align_gap;
    Axis col, poison_row, noise_row;
    col.label = "SimCLR";
    poison_row.label = "poison";
    noise_row.label = "uniform noise";
    preset.columns = {col};
    preset.rows = {poison_row, noise_row};
    ExperimentOptions eo;
    eo.results = o.cache;
    eo.seeds = o.alignment_seeds;
    eo.device = o.device;
    eo.data_root = o.data_root;
    eo.progress_seconds = o.progress_seconds;
    eo.quiet = o.progress_seconds < 0;
    eo.plan = plan_of;
    eo.save_tables = false;
    ExperimentReport er = run_experiment(preset, eo);
    const Plan plan = plan_of(preset);
    std::vector<double> poison_gaps, noise_gaps;
    for (uint64_t seed : o.alignment_seeds) {
      const nlohmann::json& cells =
          o.alignment_seeds.size() == 1 ? er.json["cells"] : er.json["cells_by_seed"]["seed-" + std::to_string(seed)];
      auto gap_of = [&cells](const std::string& id) {
        return cells.contains(id) ? metric_value(cells[id], Metric::align_gap) : std::nan("");
      };
      poison_gaps.push_back(gap_of(plan.victims[0].id));
      noise_gaps.push_back(gap_of(plan.victims[1].id));
    }
    double gap = 0;
    for (double g : poison_gaps) gap += g;
    gap /= (double)poison_gaps.size();
    // Alignment is a squared distance of unit vectors (0..4): the sd floor is 0.01 of it.
    const Calibration ac = calibrate_threshold(noise_gaps, o.k, 0.01);
    const bool gap_poisoned = gap > ac.threshold;
    rep.poisoned = rep.poisoned || gap_poisoned;
    align = {{"gap", gap},
             {"per_seed", poison_gaps},
             {"threshold", ac.threshold},
             {"noise_mean", ac.mean},
             {"noise_sd", ac.sd},
             {"noise_gaps", noise_gaps},
             {"simclr_epochs", o.simclr_epochs},
             {"seeds", o.alignment_seeds},
             {"cells_root", er.root},
             {"verdict", gap_poisoned ? "poisoned" : "clean"}};
    md += "| alignment gap of SimCLR (" + std::to_string(o.simclr_epochs) + " epochs; clean minus poisoned views) | " +
          fixed(gap, 3) + " | " + fixed(ac.threshold, 3) + " | uniform noise at the same eps: " + fixed(ac.mean, 3) +
          " ± " + fixed(ac.sd, 3) + " over " + std::to_string(ac.n) + " seeds | " + (gap_poisoned ? "**poisoned**" : "clean") +
          " |\n";
  }
  md += "\nVerdict: **" + std::string(rep.poisoned ? "poisoned" : "clean") +
        "**. Fit speed: the larger training accuracy (%) a linear model and a two-layer network (" +
        std::to_string(o.fit.hidden) + " hidden units) reach after " + std::to_string(o.fit.epochs) +
        " epochs of SGD (batch " + std::to_string(o.fit.batch_size) + ", lr " + fixed(o.fit.lr, 3) +
        ") on the labels; threshold = clean mean + " + fixed(o.k, 1) + " x max(sd, " + fixed(o.min_sd, 1) +
        "), from the same scoring of the clean data (" + ref.describe() + ") with seeds 1000..." +
        std::to_string(1000 + o.calibration_seeds - 1) + ".\n";
  rep.markdown = md;
  rep.json = {{"file", o.file},
              {"input", is_poison ? "poison" : "dataset"},
              {"reference", ref.describe()},
              {"fit_speed", fit},
              {"alignment_gap", align},
              {"verdict", rep.poisoned ? "poisoned" : "clean"}};
  if (o.write) {
    rep.out = o.out.empty() ? (fs::path("results/detect") / fs::path(o.file).stem()).string() : o.out;
    fs::create_directories(rep.out);
    write_text((fs::path(rep.out) / "table.md").string(), rep.markdown);
    write_json((fs::path(rep.out) / "result.json").string(), rep.json);
  }
  return rep;
}

}  // namespace cpoison::tools::experiment
