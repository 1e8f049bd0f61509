// `cpoison bench usvt`: images/s of the matrix-completion defence (defense/usvt.h) on a batch of
// CIFAR-sized images [N, C, H, W] = [--batch, 3, 32, 32] of uniform random pixels: drawing the
// pixel mask, the batched SVDs, thresholding and rebuilding, timed as the median of repeats after
// a warm-up. Prints the device, a Markdown table, one JSON line, and finally `images/s: <number>`.
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "defense/usvt.h"
#include "engine/ops/linalg.h"
#include "tools/bench.h"
#include "tools/common.h"

namespace cpoison::tools {
namespace {

struct UsvtBenchOptions {
  std::string device = "cpu";
  int64_t batch = 512;
  int64_t image_size = 32;
  int repeats = 5;
  int warmup = 1;
  std::string mode = "channel";
  double p = 0.25, keep = 0.8;
  bool chatterjee = false;
};

void run_usvt(const UsvtBenchOptions& o) {
  const char* where = "bench usvt";
  CP_CHECK(o.batch >= 1, where, "--batch must be >= 1, got ", o.batch);
  CP_CHECK(o.image_size >= 1, where, "--size must be >= 1, got ", o.image_size);
  CP_CHECK(o.warmup >= 0, where, "--warmup must be >= 0, got ", o.warmup);
  const Device dev = parse_device(o.device);
  CP_CHECK(has_singular_value_threshold(dev), where, "no USVT kernel on ", device_name(dev),
           dev == Device::cuda ? " (the CUDA kernel cuda::singular_value_threshold needs a CUDA build and a usable GPU)" : "");
  defense::UsvtOptions opt;
  opt.p = o.p;
  opt.keep = o.keep;
  opt.mode = o.mode == "stacked" ? defense::UsvtMode::stacked : defense::UsvtMode::channel;
  if (o.chatterjee) opt.threshold = defense::UsvtThreshold::chatterjee;
  opt.validate();

  Generator data_gen(1, 0);
  Tensor images = uniform({o.batch, 3, o.image_size, o.image_size}, 0.0, 1.0, data_gen, DType::f32, dev);
  Generator mask_gen(2, 0);
  auto run_once = [&] { sync_device(defense::matrix_completion(images, opt, mask_gen)); };
  const int64_t rows = o.image_size, cols = opt.mode == defense::UsvtMode::stacked ? 3 * o.image_size : o.image_size;
  const int64_t matrices = opt.mode == defense::UsvtMode::stacked ? o.batch : 3 * o.batch;
  print_device(dev);
  std::printf("USVT %s (p %g, keep %g%s): %lld matrices of %lldx%lld per batch of %lld images, f32 in, SVD in "
              "double, median of %d after %d warm-up\n\n",
              defense::usvt_mode_name(opt.mode), opt.p, opt.keep, o.chatterjee ? ", Chatterjee threshold" : "",
              (long long)matrices, (long long)rows, (long long)cols, (long long)o.batch, o.repeats, o.warmup);
  std::fflush(stdout);

  const auto runs = time_runs(run_once, o.repeats, o.warmup);
  const double batch_s = median(runs);
  const double images_per_s = (double)o.batch / batch_s;
  std::printf("| mode | batch | matrix | ms/batch (median) | images/s |\n|---|---:|---:|---:|---:|\n");
  std::printf("| %s | %lld | %lldx%lld | %.2f | %.1f |\n\n", defense::usvt_mode_name(opt.mode), (long long)o.batch,
              (long long)rows, (long long)cols, batch_s * 1e3, images_per_s);
  nlohmann::json j{{"bench", "usvt"},
                   {"mode", defense::usvt_mode_name(opt.mode)},
                   {"p", opt.p},
                   {"keep", opt.keep},
                   {"chatterjee", o.chatterjee},
                   {"batch", o.batch},
                   {"image_size", o.image_size},
                   {"matrices", matrices},
                   {"device", device_description(dev)},
                   {"omp_threads", omp_threads()},
                   {"blas_threads", blas_threads()},
                   {"repeats", o.repeats},
                   {"warmup", o.warmup},
                   {"batch_ms", runs},
                   {"median_batch_ms", batch_s * 1e3},
                   {"images_per_s", images_per_s}};
  for (auto& t : j["batch_ms"]) t = t.get<double>() * 1e3;
  std::printf("%s\n", j.dump().c_str());
  std::printf("images/s: %.1f\n", images_per_s);
}

void setup_usvt(CLI::App& app) {
  auto o = std::make_shared<UsvtBenchOptions>();
  app.add_option("--device", o->device, "cpu or cuda")->capture_default_str();
  app.add_option("--batch", o->batch, "Images per batch (3 channels)")->check(tools::int_range(1, kMaxAxis))->capture_default_str();
  app.add_option("--size", o->image_size, "Image height and width")->check(tools::int_range(1, kMaxImageSide))->capture_default_str();
  app.add_option("--repeats", o->repeats, "Timed batches (the median is reported)")->check(tools::int_range(1, 1000000))->capture_default_str();
  app.add_option("--warmup", o->warmup, "Untimed batches before timing")->check(tools::int_range(0, 1000000))->capture_default_str();
  app.add_option("--mode", o->mode, "channel (H x W per channel) or stacked (H x 3W)")
      ->check(CLI::IsMember({"channel", "stacked"}))
      ->capture_default_str();
  app.add_option("--p", o->p, "Pixel drop probability")->check(tools::in_range({0, 1, false, true}))->capture_default_str();
  app.add_option("--keep", o->keep, "Fraction of singular values kept")->check(tools::in_range({0, 1, true, false}))->capture_default_str();
  app.add_flag("--chatterjee", o->chatterjee, "Also apply Chatterjee's threshold");
  app.callback([o] { run_usvt(*o); });
}

}  // namespace

CPOISON_BENCH(usvt, "Matrix completion (USVT) of a batch of 3x32x32 images", setup_usvt);

}  // namespace cpoison::tools
