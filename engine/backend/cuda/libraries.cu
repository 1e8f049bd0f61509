// cuBLAS, cuDNN and cuSOLVER handles bound to the backend's stream, and one shared workspace.
#include <mutex>

#include "engine/backend/cuda/libraries.cuh"
#include "engine/backend/memory.h"

namespace cpoison::cuda {

cublasHandle_t cublas_handle() {
  static cublasHandle_t h = [] {
    cublasHandle_t created = nullptr;
    CP_CUBLAS_CHECK(cublasCreate(&created));
    CP_CUBLAS_CHECK(cublasSetStream(created, stream()));
    return created;
  }();
  return h;
}

cudnnHandle_t cudnn_handle() {
  static cudnnHandle_t h = [] {
    cudnnHandle_t created = nullptr;
    CP_CUDNN_CHECK(cudnnCreate(&created));
    CP_CUDNN_CHECK(cudnnSetStream(created, stream()));
    return created;
  }();
  return h;
}

cusolverDnHandle_t cusolver_handle() {
  static cusolverDnHandle_t h = [] {
    cusolverDnHandle_t created = nullptr;
    CP_CUSOLVER_CHECK(cusolverDnCreate(&created));
    CP_CUSOLVER_CHECK(cusolverDnSetStream(created, stream()));
    return created;
  }();
  return h;
}

const char* cusolver_status_name(cusolverStatus_t s) {
  switch (s) {
    case CUSOLVER_STATUS_SUCCESS: return "success";
    case CUSOLVER_STATUS_NOT_INITIALIZED: return "not initialized";
    case CUSOLVER_STATUS_ALLOC_FAILED: return "allocation failed";
    case CUSOLVER_STATUS_INVALID_VALUE: return "invalid value";
    case CUSOLVER_STATUS_ARCH_MISMATCH: return "architecture mismatch";
    case CUSOLVER_STATUS_EXECUTION_FAILED: return "execution failed";
    case CUSOLVER_STATUS_INTERNAL_ERROR: return "internal error";
    case CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED: return "matrix type not supported";
    case CUSOLVER_STATUS_NOT_SUPPORTED: return "not supported";
    default: return "cuSOLVER error";
  }
}

// The workspace is replaced (freed back to the cache, stream-ordered) when a larger one is asked
// for; callers use it only for work queued before their next call to workspace().
void* workspace(size_t nbytes) {
  static void* ptr = nullptr;
  static size_t size = 0;
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  if (nbytes > size) {
    if (ptr) device_free(ptr, size);
    size = nbytes;
    ptr = device_alloc(size);
  }
  return ptr;
}

}  // namespace cpoison::cuda
