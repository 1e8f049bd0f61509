// Data-parallel training over MPI (issue #15): the process group of `mpirun -np K cpoison ...`.
//
// Without mpirun nothing changes: rank() is 0, size() is 1, no MPI function is ever called (a
// binary built with MPI and started without mpirun behaves exactly as one built without it).
// Under mpirun (detected from the launcher's environment: OMPI_COMM_WORLD_SIZE, PMI_SIZE,
// PMIX_RANK) MPI is initialised on first use and finalised at exit. Collectives run on the
// CPU; every rank must call them in the same order (the same program on the same global batch
// does). A binary built without MPI (libopenmpi-dev absent) refuses to run under mpirun with
// more than one rank, with an Error saying so.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace cpoison::distributed {

bool mpi_compiled();  // built with MPI (meson found an MPI library)
int rank();           // 0 without mpirun
int size();           // 1 without mpirun
inline bool is_root() { return rank() == 0; }  // the rank that prints and writes files

// In-place sums over all ranks (MPI_Allreduce, MPI_SUM); nothing happens when size() == 1.
void all_reduce_sum(float* data, size_t n);
void all_reduce_sum(double* data, size_t n);
double all_reduce_sum(double value);
// Every rank sends `bytes` bytes; recv (size() * bytes) receives them in rank order.
void all_gather(const void* send, size_t bytes, void* recv);
std::vector<int64_t> all_gather(int64_t value);
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
