// `cpoison bench step`: one full training step of a learner on random data — forward, loss
// (--algo: the supervised cross-entropy by default, or SimCLR / MoCo v2 / BYOL on two random
// views, no augmentation), backward, SGD update with momentum — warmed up, then timed as the
// median of repeats. Prints the device, the CPU convolution kernels (oneDNN or the reference), a
// Markdown table, one JSON line, and finally exactly `images/s: <number>`.
// Layout: images [N, C, H, W] (N = --batch, C = --channels, H = W = --size).
//
// Under `mpirun -np K` (issue #15, docs/distributed.md) the step is data-parallel as in
// `cpoison train`: --batch is the global batch, every rank draws it and keeps its N/K rows, and
// the step synchronises gradients, BatchNorm statistics, SimCLR's negatives and MoCo's keys.
// Rank 0 prints; the table then adds the bytes each rank communicated per step, by kind
// (distributed::traffic()). With one rank nothing is communicated.
#include <cblas.h>
#include <omp.h>

#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "algorithms/data_parallel.h"
#include "algorithms/learner.h"
#include "algorithms/training_state.h"
#include "engine/backend/cpu/allocator.h"
#include "engine/backend/cpu/conv.h"
#include "engine/backend/settings.h"
#include "engine/distributed/comm.h"
#include "engine/distributed/ops.h"
#include "engine/optim/sgd.h"
#include "engine/rng.h"
#include "models/registry.h"
#include "tools/bench.h"
#include "tools/common.h"

namespace cpoison::tools {
namespace {

struct StepOptions {
  std::string algo = "supervised";
  std::string model = "resnet18";
  int64_t batch = 128;
  int64_t width = 64;
  int64_t classes = 10;
  int64_t image_size = 32;
  int64_t channels = 3;
  int threads = 0;  // 0: OpenMP's default
  std::string device = "cpu";
  int repeats = 5;
  int warmup = 1;
  bool tf32 = false;
};

struct TrafficPerStep {
  int64_t calls = 0, buffer_bytes = 0, sent_bytes = 0;
};

void run_step(const StepOptions& o) {
  const char* where = "bench step";
  CP_CHECK(o.batch >= 2, where, "--batch must be >= 2 (batch norm needs two samples in training), got ", o.batch);
  CP_CHECK(o.classes >= 1, where, "--classes must be >= 1, got ", o.classes);
  CP_CHECK(o.image_size >= 1, where, "--size must be >= 1, got ", o.image_size);
  CP_CHECK(o.warmup >= 0, where, "--warmup must be >= 0, got ", o.warmup);
  CP_CHECK(o.channels >= 1, where, "--channels must be >= 1, got ", o.channels);
  CP_CHECK(o.threads >= 0, where, "--threads must be >= 0, got ", o.threads);
  const Device dev = parse_device(o.device);
  if (o.threads > 0) {
    omp_set_num_threads(o.threads);
    openblas_set_num_threads(o.threads);
  }
  // TF32 only changes CUDA math; asking for it on the CPU is allowed and changes nothing.
  set_allow_tf32(o.tf32);

  const algorithms::Algo algo = algorithms::parse_algo(o.algo);
  const int ranks = distributed::size();
  const bool data_parallel = ranks > 1;
  if (data_parallel) distributed::local_slice(o.batch, where);  // an Error unless --batch splits over the ranks
  models::ModelOptions mo;
  mo.width = o.width;
  mo.num_classes = algo == algorithms::Algo::supervised ? o.classes : 0;
  mo.in_channels = o.channels;
  nn::manual_seed(0);
  auto learner = algorithms::make_learner(algo, o.model, mo, algorithms::AlgoConfig::defaults(algo));
  learner->to(dev);
  learner->train();
  // The victim recipe's optimiser (docs/reference-implementation.md §6); the LR only scales updates.
  optim::SGDOptions so;
  so.lr = 0.1;
  so.momentum = 0.9;
  so.weight_decay = 1e-4;
  algorithms::TrainingState state(learner, so);  // the step `cpoison train` and the poisoner take
  const std::vector<Tensor> params = learner->online_parameters();
  int64_t num_parameters = 0;
  for (const Tensor& p : params) num_parameters += p.numel();

  // Every rank draws the same global batch and keeps its rows (as `cpoison train` does).
  Generator gen(1, 0);
  const Shape image_shape{o.batch, o.channels, o.image_size, o.image_size};
  algorithms::Batch batch;
  batch.view1 = uniform(image_shape, 0.0, 1.0, gen, DType::f32, dev);
  if (learner->views_per_batch() == 2)
    batch.view2 = uniform(image_shape, 0.0, 1.0, gen, DType::f32, dev);
  else
    batch.labels = randint({o.batch}, 0, o.classes, gen, DType::i64, dev);
  if (data_parallel) {
    batch.view1 = distributed::local_rows(batch.view1).contiguous();
    if (batch.view2.defined()) batch.view2 = distributed::local_rows(batch.view2).contiguous();
    if (batch.labels.defined()) batch.labels = distributed::local_rows(batch.labels).contiguous();
  }
  const Tensor probe = params.back();
  double last_loss = 0;
  auto step = [&] {
    distributed::DataParallelScope scope;  // SyncBN, global negatives, MoCo's keys (inert with one rank)
    Tensor loss = learner->loss(batch);
    state.step(loss, /*average_over_ranks=*/data_parallel);
    // Reading one updated weight waits for the whole step's device work.
    sync_device(probe);
    last_loss = data_parallel ? algorithms::global_mean(loss) : loss.item();
  };
  print_device(dev);
  const std::string conv = dev == Device::cuda ? "cuDNN" : cpu_conv_kernels();
  std::printf("convolutions: %s\n", conv.c_str());
  std::printf("%s step, %s (width %lld, %lld trained parameters), f32%s, batch %lld of %lldx%lldx%lld, median of %d steps after %d warm-up\n",
              algorithms::algo_name(algo), o.model.c_str(), (long long)o.width, (long long)num_parameters,
              dev == Device::cuda && o.tf32 ? " with TF32" : "", (long long)o.batch, (long long)o.image_size,
              (long long)o.image_size, (long long)o.channels, o.repeats, o.warmup);
  const bool nccl = ranks > 1 && dev == Device::cuda && distributed::nccl_active();
  std::printf("ranks: %d%s\n\n", ranks,
              ranks == 1 ? "" : nccl ? " (collectives of CUDA tensors through NCCL)" : " (collectives through MPI on the host)");
  std::fflush(stdout);

  for (int i = 0; i < o.warmup; ++i) step();
  const auto before = cpu::host_allocator_stats();
  distributed::reset_traffic();
  const auto runs = time_runs(step, o.repeats, 0);
  const distributed::TrafficCounts traffic = distributed::traffic();
  const auto after = cpu::host_allocator_stats();
  const double step_s = median(runs);
  const double images_per_s = static_cast<double>(o.batch) / step_s;
  double fastest = runs[0];
  for (double r : runs) fastest = r < fastest ? r : fastest;

  std::printf("| algo | model | ranks | batch | ms/step (median) | ms/step (fastest) | images/s |\n|---|---|---:|---:|---:|---:|---:|\n");
  std::printf("| %s | %s | %d | %lld | %.1f | %.1f | %.1f |\n\n", algorithms::algo_name(algo), o.model.c_str(), ranks,
              (long long)o.batch, step_s * 1e3, fastest * 1e3, images_per_s);
  // Every timed step makes the same collectives: the per-step counts are whole numbers.
  nlohmann::json traffic_json = nlohmann::json::object();
  TrafficPerStep total;
  for (int k = 0; k < distributed::kTrafficKinds; ++k) {
    const distributed::TrafficCount& c = traffic[k];
    const TrafficPerStep t{c.calls / o.repeats, c.buffer_bytes / o.repeats, c.sent_bytes / o.repeats};
    traffic_json[distributed::traffic_name((distributed::Traffic)k)] = {
        {"calls", t.calls}, {"buffer_bytes", t.buffer_bytes}, {"sent_bytes", t.sent_bytes}};
    total.calls += t.calls, total.buffer_bytes += t.buffer_bytes, total.sent_bytes += t.sent_bytes;
  }
  if (ranks > 1) {
    std::printf("Communicated per step by each rank (buffer: the collectives' payload; sent: what the ring algorithms "
                "send, and receive as much: 2(K-1)/K of an all-reduce's buffer, (K-1)/K of an all-gather's):\n\n");
    std::printf("| traffic | collectives | buffer bytes | sent bytes |\n|---|---:|---:|---:|\n");
    for (int k = 0; k < distributed::kTrafficKinds; ++k) {
      const auto& t = traffic_json[distributed::traffic_name((distributed::Traffic)k)];
      std::printf("| %s | %lld | %lld | %lld |\n", distributed::traffic_name((distributed::Traffic)k),
                  (long long)t["calls"].get<int64_t>(), (long long)t["buffer_bytes"].get<int64_t>(),
                  (long long)t["sent_bytes"].get<int64_t>());
    }
    std::printf("| total | %lld | %lld | %lld |\n\n", (long long)total.calls, (long long)total.buffer_bytes,
                (long long)total.sent_bytes);
  }
  nlohmann::json j{{"bench", "step"},
                   {"algo", algorithms::algo_name(algo)},
                   {"ranks", ranks},
                   {"nccl", nccl},
                   {"traffic_per_step", traffic_json},
                   {"sent_bytes_per_step", total.sent_bytes},
                   {"model", o.model},
                   {"width", o.width},
                   {"parameters", num_parameters},
                   {"batch", o.batch},
                   {"image_size", o.image_size},
                   {"channels", o.channels},
                   {"conv", conv},
                   {"device", device_description(dev)},
                   {"omp_threads", omp_threads()},
                   {"blas_threads", blas_threads()},
                   {"tf32", o.tf32},
                   {"repeats", o.repeats},
                   {"warmup", o.warmup},
                   {"step_ms", runs},
                   {"median_step_ms", step_s * 1e3},
                   {"final_loss", last_loss},
                   // large CPU blocks mapped from the kernel / served from the cache during the timed steps
                   {"host_maps", after.maps - before.maps},
                   {"host_cache_hits", after.cache_hits - before.cache_hits},
                   {"images_per_s", images_per_s}};
  for (auto& t : j["step_ms"]) t = t.get<double>() * 1e3;
  std::printf("%s\n", j.dump().c_str());
  std::printf("images/s: %.1f\n", images_per_s);
}

void setup_step(CLI::App& app) {
  auto o = std::make_shared<StepOptions>();
  app.add_option("--algo", o->algo, "supervised, simclr, moco or byol (the contrastive ones on two random views)")->capture_default_str();
  app.add_option("--model", o->model, "Model name (see `cpoison models`)")->capture_default_str();
  app.add_option("--batch", o->batch, "Images per batch (under mpirun: the global batch, split over the ranks)")->check(tools::int_range(1, kMaxAxis))->capture_default_str();
  app.add_option("--width", o->width, "Base width (64: the standard model)")->check(tools::int_range(1, models::kMaxWidth))->capture_default_str();
  app.add_option("--classes", o->classes, "Classes of the linear head")->check(tools::int_range(0, models::kMaxClasses))->capture_default_str();
  app.add_option("--size", o->image_size, "Image height and width")->check(tools::int_range(1, kMaxImageSide))->capture_default_str();
  app.add_option("--channels", o->channels, "Image channels (3: CIFAR, 1: Fashion-MNIST)")
      ->check(tools::int_range(1, 4096))
      ->capture_default_str();
  app.add_option("--threads", o->threads, "CPU threads (OpenMP and OpenBLAS); 0: the default (OMP_NUM_THREADS or all cores)")
      ->check(tools::int_range(0, 4096))
      ->capture_default_str();
  app.add_option("--device", o->device, "cpu or cuda")->capture_default_str();
  app.add_option("--repeats", o->repeats, "Timed steps (the median is reported)")->check(tools::int_range(1, 1000000))->capture_default_str();
  app.add_option("--warmup", o->warmup, "Untimed steps before timing")->check(tools::int_range(0, 1000000))->capture_default_str();
  app.add_flag("--tf32", o->tf32, "Allow TensorFloat-32 math in CUDA convolutions and GEMMs");
  app.callback([o] { run_step(*o); });
}

}  // namespace

CPOISON_BENCH(step, "One training step (forward, loss, backward, SGD momentum); data-parallel under mpirun, with the bytes communicated", setup_step);

}  // namespace cpoison::tools
