// The MPI process group (comm.h). The only file that includes <mpi.h> and <nccl.h>; without
// CPOISON_MPI every function is the one-process fallback; without CPOISON_NCCL, or without
// libnccl at run time, the nccl_* functions are errors (nccl_active() is false, so the ops never
// call them).
#include "engine/distributed/comm.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <type_traits>

#include <fcntl.h>
#include <unistd.h>
#include <mutex>

#include "engine/error.h"

#ifdef CPOISON_MPI
#define OMPI_SKIP_MPICXX 1  // the C API only (no deprecated C++ bindings)
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif
#ifdef CPOISON_CUDA
#include <cuda_runtime.h>
#endif
#ifdef CPOISON_NCCL
#include <dlfcn.h>
#include <nccl.h>
namespace cpoison::cuda {
cudaStream_t stream();  // the backend's one stream (engine/backend/cuda/common.cuh, a .cu-only header)
}
#endif

namespace cpoison::distributed {
namespace {

// The launcher's view of the world size, or 1 when not started by mpirun/srun.
int launcher_size() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"}) {
    const char* v = std::getenv(var);
    if (v && *v) return std::max(1, std::atoi(v));
  }
  return std::getenv("PMIX_RANK") ? 2 : 1;  // PMIx without a size: treat as launched, ask MPI
}

#ifdef CPOISON_NCCL
// libnccl is opened at run time (dlopen) rather than linked: it is 200 MB, and not every machine
// with CUDA has it. A binary built with NCCL then runs where it is missing, on the host path
// (nccl_available() and nccl_active() are false), instead of failing to start.
struct NcclApi {
  decltype(&ncclGetUniqueId) get_unique_id = nullptr;
  decltype(&ncclCommInitRank) comm_init_rank = nullptr;
  decltype(&ncclCommDestroy) comm_destroy = nullptr;
  decltype(&ncclAllReduce) all_reduce = nullptr;
  decltype(&ncclAllGather) all_gather = nullptr;
  decltype(&ncclGetErrorString) error_string = nullptr;
};

// The library's functions, or null when it cannot be opened: first by its soname (the loader's
// search path: LD_LIBRARY_PATH, the executable's run path, ldconfig), then where meson found it.
const NcclApi* nccl_api() {
  static const NcclApi* api = []() -> const NcclApi* {
    void* lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!lib) lib = dlopen(CPOISON_NCCL_LIBDIR "/libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return nullptr;
    static NcclApi a;
    auto load = [lib](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
      return fn != nullptr;
    };
    const bool complete = load(a.get_unique_id, "ncclGetUniqueId") && load(a.comm_init_rank, "ncclCommInitRank") &&
                          load(a.comm_destroy, "ncclCommDestroy") && load(a.all_reduce, "ncclAllReduce") &&
                          load(a.all_gather, "ncclAllGather") && load(a.error_string, "ncclGetErrorString");
    return complete ? &a : nullptr;
  }();
  return api;
}
#endif

struct World {
  int rank = 0, size = 1;
  bool mpi = false;   // MPI_Init called by us
  bool nccl = false;  // every rank has a GPU of its own and NCCL: nccl_active()
};

#ifdef CPOISON_MPI
void finalize() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}
void check(int rc, const char* what) {
  if (rc != MPI_SUCCESS) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    fail("MPI", what, " failed: ", std::string(msg, len));
  }
}
#endif

#if defined(CPOISON_MPI) && defined(CPOISON_CUDA)
// Gives this rank its own GPU: its rank among the ranks on its node (MPI_COMM_TYPE_SHARED), modulo
// the GPUs it sees (one, when the launcher gave each rank its own through CUDA_VISIBLE_DEVICES).
// Called when MPI starts, before any CUDA work, on the thread that does all of it. Returns
// whether every rank of the node got a different GPU (told apart by PCI bus id): NCCL needs that
// (two ranks on one GPU are an NCCL error); otherwise, or without a GPU, the host path runs.
bool select_local_gpu() {
  MPI_Comm node = MPI_COMM_NULL;
  check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node), "MPI_Comm_split_type");
  int local_rank = 0, local_size = 1, gpus = 0;
  MPI_Comm_rank(node, &local_rank);
  MPI_Comm_size(node, &local_size);
  constexpr int kBusIdChars = 32;
  char bus_id[kBusIdChars] = {};
  if (cudaGetDeviceCount(&gpus) != cudaSuccess || gpus == 0) {
    (void)cudaGetLastError();  // no driver or no GPU: a CPU run; clear the error
    gpus = 0;
  } else if (cudaSetDevice(local_rank % gpus) != cudaSuccess ||
             cudaDeviceGetPCIBusId(bus_id, kBusIdChars, local_rank % gpus) != cudaSuccess) {
    (void)cudaGetLastError();
    gpus = 0;
  }
  std::vector<char> all(size_t(local_size) * kBusIdChars);
  check(MPI_Allgather(bus_id, kBusIdChars, MPI_CHAR, all.data(), kBusIdChars, MPI_CHAR, node), "MPI_Allgather");
  MPI_Comm_free(&node);
  // A rank without a GPU returns false itself; the caller's MIN over the ranks tells all of them.
  bool distinct = gpus > 0;
  for (int a = 0; a < local_size && distinct; ++a)
    for (int b = a + 1; b < local_size && distinct; ++b)
      distinct = std::strncmp(&all[size_t(a) * kBusIdChars], &all[size_t(b) * kBusIdChars], kBusIdChars) != 0;
  return distinct;
}
#endif

World& world() {
  static World w;
  static std::once_flag once;
  std::call_once(once, [] {
    if (launcher_size() <= 1) return;
#ifdef CPOISON_MPI
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
      std::atexit(finalize);
    }
    w.mpi = true;
    MPI_Comm_rank(MPI_COMM_WORLD, &w.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &w.size);
    // A launcher that announced K ranks while MPI sees another number (srun without its MPI
    // plugin starts K singletons): K copies of a one-process run would overwrite each other.
    const bool announced = std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMI_SIZE") || std::getenv("PMIX_SIZE");
    CP_CHECK(!announced || launcher_size() == w.size, "MPI", "the launcher started ", launcher_size(),
             " processes but MPI sees ", w.size, " (with Slurm: srun --mpi=pmix, or mpirun inside the allocation)");
#ifdef CPOISON_CUDA
    const bool own_gpu = select_local_gpu();
#ifdef CPOISON_NCCL
    // All ranks must agree: one rank on the host path and another in NCCL would wait forever.
    int every_rank_own_gpu = own_gpu ? 1 : 0;
    if (own_gpu && !nccl_api()) every_rank_own_gpu = 0;  // no libnccl here: the host path everywhere
    check(MPI_Allreduce(MPI_IN_PLACE, &every_rank_own_gpu, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD), "MPI_Allreduce");
    w.nccl = every_rank_own_gpu == 1;
#else
    (void)own_gpu;  // without NCCL the host path only needs each rank on its own GPU
#endif
#endif
#else
    fail("MPI", "this cpoison was built without MPI (meson found no MPI library; `make deps` installs "
                "libopenmpi-dev, then rebuild) but was started by mpirun with ", launcher_size(), " ranks");
#endif
  });
  return w;
}

thread_local bool t_data_parallel = false;
int g_error_fd = 2;  // where report_error writes (the original stderr of a quietened rank)

// Plain counters: every collective runs on the thread that initialised MPI (MPI_THREAD_FUNNELED).
TrafficCounts g_traffic{};

void count_all_reduce(Traffic kind, size_t buffer_bytes) {
  const int64_t k = size(), n = (int64_t)buffer_bytes;
  TrafficCount& c = g_traffic[(int)kind];
  c.calls += 1;
  c.buffer_bytes += n;
  c.sent_bytes += 2 * (k - 1) * n / k;  // reduce-scatter then all-gather, (K-1)/K of the buffer each
}

void count_all_gather(Traffic kind, size_t bytes_per_rank) {
  const int64_t k = size(), n = (int64_t)bytes_per_rank;
  TrafficCount& c = g_traffic[(int)kind];
  c.calls += 1;
  c.buffer_bytes += k * n;
  c.sent_bytes += (k - 1) * n;  // this rank's slice to each of the K-1 others, round the ring
}

}  // namespace

bool mpi_compiled() {
#ifdef CPOISON_MPI
  return true;
#else
  return false;
#endif
}

int rank() { return world().rank; }
int size() { return world().size; }

const char* traffic_name(Traffic kind) {
  switch (kind) {
    case Traffic::gradients: return "gradients";
    case Traffic::batch_norm: return "batch_norm";
    case Traffic::features: return "features";
    case Traffic::moco_keys: return "moco_keys";
    case Traffic::other: return "other";
  }
  return "unknown";
}

TrafficCounts traffic() { return g_traffic; }
void reset_traffic() { g_traffic = TrafficCounts{}; }

void all_reduce_sum(float* data, size_t n, Traffic kind) {
  if (size() == 1 || n == 0) return;
  count_all_reduce(kind, n * sizeof(float));
#ifdef CPOISON_MPI
  for (size_t done = 0; done < n;) {  // MPI counts are int
    int count = (int)std::min<size_t>(n - done, size_t(1) << 30);
    check(MPI_Allreduce(MPI_IN_PLACE, data + done, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce");
    done += (size_t)count;
  }
#endif
}

void all_reduce_sum(double* data, size_t n, Traffic kind) {
  if (size() == 1 || n == 0) return;
  count_all_reduce(kind, n * sizeof(double));
#ifdef CPOISON_MPI
  for (size_t done = 0; done < n;) {
    int count = (int)std::min<size_t>(n - done, size_t(1) << 30);
    check(MPI_Allreduce(MPI_IN_PLACE, data + done, count, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce");
    done += (size_t)count;
  }
#endif
}

double all_reduce_sum(double value, Traffic kind) {
  all_reduce_sum(&value, 1, kind);
  return value;
}

void all_gather(const void* send, size_t bytes, void* recv, Traffic kind) {
  if (size() == 1) {
    if (bytes) std::memcpy(recv, send, bytes);
    return;
  }
  count_all_gather(kind, bytes);
#ifdef CPOISON_MPI
  CP_CHECK(bytes < (size_t(1) << 31), "all_gather", "a message of ", bytes, " bytes is too large for one MPI call");
  check(MPI_Allgather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, MPI_COMM_WORLD), "MPI_Allgather");
#endif
}

std::vector<int64_t> all_gather(int64_t value, Traffic kind) {
  std::vector<int64_t> out(size());
  all_gather(&value, sizeof value, out.data(), kind);
  return out;
}

// ---------------------------------------------------------------- NCCL

bool nccl_available() {
#ifdef CPOISON_NCCL
  return nccl_api() != nullptr;
#else
  return false;
#endif
}

bool nccl_active() { return world().nccl; }

#ifdef CPOISON_NCCL
namespace {

// The library's functions; an Error naming it when it could not be opened.
const NcclApi& nccl() {
  const NcclApi* api = nccl_api();
  CP_CHECK(api, "NCCL", "libnccl.so.2 cannot be opened (not on the library path, nor in " CPOISON_NCCL_LIBDIR ")");
  return *api;
}

void nccl_check(ncclResult_t rc, const char* what) {
  if (rc != ncclSuccess) fail("NCCL", what, " failed: ", nccl().error_string(rc));
}

ncclComm_t g_nccl_comm = nullptr;

void destroy_nccl_comm() {
  if (g_nccl_comm) nccl().comm_destroy(g_nccl_comm), g_nccl_comm = nullptr;
}

// The communicator over all ranks, made on first use: every rank reaches its first device
// collective at the same point of the same program, so the collective ncclCommInitRank meets
// all of them. Destroyed at exit, before MPI_Finalize (atexit runs in reverse order).
ncclComm_t nccl_comm() {
  static std::once_flag once;
  std::call_once(once, [] {
    CP_CHECK(size() == 1 || world().nccl, "NCCL", "a device collective with ", size(),
             " ranks, but not every rank has a GPU of its own (nccl_active() is false)");
    ncclUniqueId id{};
    if (rank() == 0) nccl_check(nccl().get_unique_id(&id), "ncclGetUniqueId");
#ifdef CPOISON_MPI
    if (size() > 1) check(MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD), "MPI_Bcast");
#endif
    nccl_check(nccl().comm_init_rank(&g_nccl_comm, size(), id, rank()), "ncclCommInitRank");
    std::atexit(destroy_nccl_comm);
  });
  return g_nccl_comm;
}

void nccl_all_reduce(void* device_data, size_t n, ncclDataType_t type, size_t element_bytes, Traffic kind) {
  if (n == 0) return;
  count_all_reduce(kind, n * element_bytes);
  nccl_check(nccl().all_reduce(device_data, device_data, n, type, ncclSum, nccl_comm(), cuda::stream()), "ncclAllReduce");
}

}  // namespace

void nccl_all_reduce_sum(float* device_data, size_t n, Traffic kind) {
  nccl_all_reduce(device_data, n, ncclFloat32, sizeof(float), kind);
}
void nccl_all_reduce_sum(double* device_data, size_t n, Traffic kind) {
  nccl_all_reduce(device_data, n, ncclFloat64, sizeof(double), kind);
}
void nccl_all_gather(const void* device_send, size_t bytes, void* device_recv, Traffic kind) {
  if (bytes == 0) return;
  count_all_gather(kind, bytes);
  nccl_check(nccl().all_gather(device_send, device_recv, bytes, ncclUint8, nccl_comm(), cuda::stream()), "ncclAllGather");
}
#else
void nccl_all_reduce_sum(float*, size_t, Traffic) { fail("NCCL", "this cpoison was built without NCCL (-Dnccl)"); }
void nccl_all_reduce_sum(double*, size_t, Traffic) { fail("NCCL", "this cpoison was built without NCCL (-Dnccl)"); }
void nccl_all_gather(const void*, size_t, void*, Traffic) { fail("NCCL", "this cpoison was built without NCCL (-Dnccl)"); }
#endif

void barrier() {
  if (size() == 1) return;
#ifdef CPOISON_MPI
  check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
#endif
}

void abort_all(int code) {
#ifdef CPOISON_MPI
  int initialized = 0, finalized = 0, k = 1;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Comm_size(MPI_COMM_WORLD, &k);
  if (k > 1) MPI_Abort(MPI_COMM_WORLD, code);
#endif
}

void quiet_other_ranks() {
  if (size() == 1 || rank() == 0) return;
  std::fflush(stdout);
  std::fflush(stderr);
  const int saved = ::dup(2);
  const int null_fd = ::open("/dev/null", O_WRONLY);
  if (saved < 0 || null_fd < 0) return;  // keep printing rather than lose errors
  g_error_fd = saved;
  ::dup2(null_fd, 1);
  ::dup2(null_fd, 2);
  ::close(null_fd);
}

int report_error(const char* what) {
  int r = 0, k = 1;
  try {  // the error may be MPI's own (this binary has no MPI, or MPI_Init failed)
    r = rank(), k = size();
  } catch (const std::exception&) {
  }
  std::string line = (k > 1 && r != 0 ? "rank " + std::to_string(r) + ": " : std::string()) + "error: " + what + "\n";
  std::fflush(stderr);
  if (::write(g_error_fd, line.data(), line.size()) < 0) { /* nothing left to report to */ }
  abort_all(1);
  return 1;
}

Slice local_slice(int64_t n, const char* where) {
  const int64_t k = size();
  CP_CHECK(n % k == 0, where, "the global batch of ", n, " rows does not split evenly over ", k,
           " ranks (choose a batch size that is a multiple of the number of ranks)");
  const int64_t b = n / k;
  return {rank() * b, (rank() + 1) * b};
}

DataParallelScope::DataParallelScope() : prev_(t_data_parallel) { t_data_parallel = true; }
DataParallelScope::~DataParallelScope() { t_data_parallel = prev_; }
bool data_parallel() { return t_data_parallel && size() > 1; }

}  // namespace cpoison::distributed
