// The MPI process group (comm.h). The only file that includes <mpi.h>; without CPOISON_MPI
// every function is the one-process fallback.
#include "engine/distributed/comm.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

#include <fcntl.h>
#include <unistd.h>
#include <mutex>

#include "engine/error.h"

#ifdef CPOISON_MPI
#define OMPI_SKIP_MPICXX 1  // the C API only (no deprecated C++ bindings)
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
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

struct World {
  int rank = 0, size = 1;
  bool mpi = false;  // MPI_Init called by us
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
#else
    fail("MPI", "this cpoison was built without MPI (meson found no MPI library; `make deps` installs "
                "libopenmpi-dev, then rebuild) but was started by mpirun with ", launcher_size(), " ranks");
#endif
  });
  return w;
}

thread_local bool t_data_parallel = false;
int g_error_fd = 2;  // where report_error writes (the original stderr of a quietened rank)

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

void all_reduce_sum(float* data, size_t n) {
  if (size() == 1 || n == 0) return;
#ifdef CPOISON_MPI
  for (size_t done = 0; done < n;) {  // MPI counts are int
    int count = (int)std::min<size_t>(n - done, size_t(1) << 30);
    check(MPI_Allreduce(MPI_IN_PLACE, data + done, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce");
    done += (size_t)count;
  }
#endif
}

void all_reduce_sum(double* data, size_t n) {
  if (size() == 1 || n == 0) return;
#ifdef CPOISON_MPI
  for (size_t done = 0; done < n;) {
    int count = (int)std::min<size_t>(n - done, size_t(1) << 30);
    check(MPI_Allreduce(MPI_IN_PLACE, data + done, count, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce");
    done += (size_t)count;
  }
#endif
}

double all_reduce_sum(double value) {
  all_reduce_sum(&value, 1);
  return value;
}

void all_gather(const void* send, size_t bytes, void* recv) {
  if (size() == 1) {
    if (bytes) std::memcpy(recv, send, bytes);
    return;
  }
#ifdef CPOISON_MPI
  CP_CHECK(bytes < (size_t(1) << 31), "all_gather", "a message of ", bytes, " bytes is too large for one MPI call");
  check(MPI_Allgather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, MPI_COMM_WORLD), "MPI_Allgather");
#endif
}

std::vector<int64_t> all_gather(int64_t value) {
  std::vector<int64_t> out(size());
  all_gather(&value, sizeof value, out.data());
  return out;
}

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
