// Handles and checking macros for the NVIDIA libraries (cuBLAS, cuDNN, cuSOLVER). Each handle is
// created on first use, bound to the backend's stream, and lives until the process ends.
#pragma once
#include <cublas_v2.h>
#include <cudnn.h>
#include <cusolverDn.h>

#include "engine/backend/cuda/common.cuh"

namespace cpoison::cuda {
cublasHandle_t cublas_handle();
cudnnHandle_t cudnn_handle();
cusolverDnHandle_t cusolver_handle();
const char* cusolver_status_name(cusolverStatus_t s);

// Scratch memory shared by library calls on the stream (cuDNN workspaces, cuBLAS/cuSOLVER
// buffers). Grows to the largest size asked; the pointer stays valid until the next call.
void* workspace(size_t nbytes);
}  // namespace cpoison::cuda

#define CP_CUBLAS_CHECK(expr)                                                                               \
  do {                                                                                                      \
    cublasStatus_t cp_status_ = (expr);                                                                     \
    if (cp_status_ != CUBLAS_STATUS_SUCCESS)                                                                \
      ::cpoison::cuda::throw_library_error("cuBLAS", #expr, __FILE__, __LINE__, (long)cp_status_,           \
                                           cublasGetStatusString(cp_status_));                              \
  } while (0)

#define CP_CUDNN_CHECK(expr)                                                                                \
  do {                                                                                                      \
    cudnnStatus_t cp_status_ = (expr);                                                                      \
    if (cp_status_ != CUDNN_STATUS_SUCCESS)                                                                 \
      ::cpoison::cuda::throw_library_error("cuDNN", #expr, __FILE__, __LINE__, (long)cp_status_,            \
                                           cudnnGetErrorString(cp_status_));                                \
  } while (0)

#define CP_CUSOLVER_CHECK(expr)                                                                             \
  do {                                                                                                      \
    cusolverStatus_t cp_status_ = (expr);                                                                   \
    if (cp_status_ != CUSOLVER_STATUS_SUCCESS)                                                              \
      ::cpoison::cuda::throw_library_error("cuSOLVER", #expr, __FILE__, __LINE__, (long)cp_status_,         \
                                           ::cpoison::cuda::cusolver_status_name(cp_status_));              \
  } while (0)
