// Data-parallel training over MPI (issue #15): the process group of `mpirun -np K cpoison ...`.
//
// Without mpirun nothing changes: rank() is 0, size() is 1, no MPI function is ever called (a
// binary built with MPI and started without mpirun behaves exactly as one built without it).
// Under mpirun (detected from the launcher's environment: OMPI_COMM_WORLD_SIZE, PMI_SIZE,
// PMIX_RANK) MPI is initialised on first use and finalised at exit. Collectives run on the
// CPU, or with NCCL on the GPU (nccl_active()); every rank must call them in the same order (the
// same program on the same global batch does). A binary built without MPI (libopenmpi-dev
// absent) refuses to run under mpirun with more than one rank, with an Error saying so.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace cpoison::distributed {

bool mpi_compiled();  // built with MPI (meson found an MPI library)
int rank();           // 0 without mpirun
int size();           // 1 without mpirun
inline bool is_root() { return rank() == 0; }  // the rank that prints and writes files

// What a collective carries, for the traffic counters below: the averaged gradients, SyncBN's
// statistics and their gradients, the feature rows of SimCLR's global negatives (and their
// gradients), MoCo's keys, and everything else (losses, row counts, flags).
enum class Traffic { gradients, batch_norm, features, moco_keys, other };
inline constexpr int kTrafficKinds = 5;
const char* traffic_name(Traffic kind);  // "gradients", "batch_norm", "features", "moco_keys", "other"

// In-place sums over all ranks (MPI_Allreduce, MPI_SUM); nothing happens when size() == 1.
void all_reduce_sum(float* data, size_t n, Traffic kind = Traffic::other);
void all_reduce_sum(double* data, size_t n, Traffic kind = Traffic::other);
double all_reduce_sum(double value, Traffic kind = Traffic::other);
// Every rank sends `bytes` bytes; recv (size() * bytes) receives them in rank order.
void all_gather(const void* send, size_t bytes, void* recv, Traffic kind = Traffic::other);
std::vector<int64_t> all_gather(int64_t value, Traffic kind = Traffic::other);

// Bytes communicated, counted by every collective above and below that runs with more than one
// rank (with one rank nothing is sent and nothing is counted; the NCCL collectives count with
// one rank too, with zero bytes sent). buffer_bytes: the collective's buffer (an all-reduce's
// n values, an all-gather's whole output of size() slices). sent_bytes: what this rank sends,
// and receives as much, under the bandwidth-optimal ring algorithms: 2(K-1)/K of the buffer for
// an all-reduce, (K-1)/K for an all-gather (K = size()). That is what NCCL's ring moves; MPI
// may pick another algorithm (recursive doubling for small buffers sends log2(K) whole
// buffers), so sent_bytes is the model, buffer_bytes the exact payload. Counting is a few
// additions per call.
struct TrafficCount {
  int64_t calls = 0;
  int64_t buffer_bytes = 0;
  int64_t sent_bytes = 0;
};
using TrafficCounts = std::array<TrafficCount, kTrafficKinds>;  // indexed by Traffic
TrafficCounts traffic();  // since the start or the last reset_traffic(), this rank
void reset_traffic();

// NCCL (CUDA builds configured with MPI and NCCL, -Dnccl=auto): collectives on device memory,
// queued on the CUDA backend's stream, so they are ordered with the kernels around them and the
// host does not wait. The communicator is made on first use over all ranks (rank 0's
// ncclGetUniqueId broadcast with MPI; without mpirun a communicator of one rank), on the GPU the
// rank was given when MPI started (its rank among the ranks on its node). libnccl.so.2 is opened
// at run time, not linked. nccl_available(): this build has NCCL and the library opens.
// nccl_active(): it is available on every rank, each rank has a GPU of its own and there is more
// than one rank: the differentiable collectives (ops.h) then reduce CUDA tensors with these
// instead of copying them through the host. The pointers are device pointers. With one rank
// the functions still run (a copy through NCCL), so that one GPU can test them.
bool nccl_available();
bool nccl_active();
void nccl_all_reduce_sum(float* device_data, size_t n, Traffic kind = Traffic::other);
void nccl_all_reduce_sum(double* device_data, size_t n, Traffic kind = Traffic::other);
// Every rank sends `bytes` bytes of device memory; device_recv (size() * bytes) receives them in
// rank order.
void nccl_all_gather(const void* device_send, size_t bytes, void* device_recv, Traffic kind = Traffic::other);
void barrier();
// Ends every rank (MPI_Abort) after an error on one of them, so that the others do not wait
// in a collective forever; does nothing when size() == 1.
void abort_all(int code);

// For the executable's main (tools/main.cpp). quiet_other_ranks: with more than one rank, every
// rank but 0 sends its stdout and stderr to /dev/null (rank 0 alone prints). report_error prints
// "error: <what>" on the original stderr (prefixed "rank r: " on other ranks than 0) and, with
// more than one rank, ends them all (MPI_Abort); it returns 1 otherwise (the exit status).
void quiet_other_ranks();
int report_error(const char* what);

// Rows [begin, end) of a global batch of n rows that this rank takes: equal slices in rank
// order; n must be a multiple of size() (an Error naming where otherwise).
struct Slice {
  int64_t begin = 0, end = 0;
};
Slice local_slice(int64_t n, const char* where);

// Marks the code in its lifetime as a rank's part of a data-parallel step: while one is alive
// and size() > 1, batch norm in training mode synchronises its statistics over the ranks
// (SyncBN) and NT-Xent takes its negatives from the global batch (all_gather_rows). Outside
// any scope (and always with one rank) every op computes on its own inputs as before.
class DataParallelScope {
public:
  DataParallelScope();
  ~DataParallelScope();
  DataParallelScope(const DataParallelScope&) = delete;
  DataParallelScope& operator=(const DataParallelScope&) = delete;

private:
  bool prev_;
};
bool data_parallel();  // a scope is alive on this thread and size() > 1

}  // namespace cpoison::distributed
