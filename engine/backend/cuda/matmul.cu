// CUDA matrix products through cuBLAS. Our tensors are row-major and cuBLAS is column-major: a
// row-major [r, c] matrix is its column-major transpose, so C = op(A) op(B) is computed as
// Cᵀ = op(B)ᵀ op(A)ᵀ with the operands swapped. f32 uses full-precision FP32 compute unless
// set_allow_tf32(true); f64 uses FP64.
#include <climits>

#include "engine/backend/cuda/libraries.cuh"
#include "engine/backend/nn.h"
#include "engine/backend/settings.h"

namespace cpoison::cuda {

namespace {
// One (possibly batched, possibly broadcast with stride 0) row-major GEMM:
// c[i] (M x N) = op(a[i]) op(b[i]) with a[i] at a + i*stride_a, etc.
void gemm_rowmajor(DType dtype, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const void* a, int64_t lda,
                   int64_t stride_a, const void* b, int64_t ldb, int64_t stride_b, void* c, int64_t stride_c, int64_t batch) {
  for (int64_t v : {M, N, K, lda, ldb, batch})
    CP_CHECK(v <= INT_MAX, "matmul", "dimension ", v, " exceeds cuBLAS's int range");
  cublasHandle_t h = cublas_handle();
  const cublasOperation_t op_a = ta ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  const bool f32 = dtype == DType::f32;
  const cudaDataType_t type = f32 ? CUDA_R_32F : CUDA_R_64F;
  const cublasComputeType_t compute = f32 ? (allow_tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F) : CUBLAS_COMPUTE_64F;
  const float one_f = 1.0f, zero_f = 0.0f;
  const double one_d = 1.0, zero_d = 0.0;
  const void* alpha = f32 ? (const void*)&one_f : (const void*)&one_d;
  const void* beta = f32 ? (const void*)&zero_f : (const void*)&zero_d;
  if (batch == 1) {
    CP_CUBLAS_CHECK(cublasGemmEx(h, op_b, op_a, (int)N, (int)M, (int)K, alpha, b, type, (int)ldb, a, type, (int)lda, beta, c, type,
                                 (int)N, compute, CUBLAS_GEMM_DEFAULT));
  } else {
    CP_CUBLAS_CHECK(cublasGemmStridedBatchedEx(h, op_b, op_a, (int)N, (int)M, (int)K, alpha, b, type, (int)ldb, stride_b, a, type,
                                               (int)lda, stride_a, beta, c, type, (int)N, stride_c, (int)batch, compute,
                                               CUBLAS_GEMM_DEFAULT));
  }
}
}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b) {
  CP_CHECK(a.dtype() == b.dtype() && is_floating(a.dtype()), "matmul", "needs float operands of one dtype, got ", a.describe(),
           " and ", b.describe());
  const bool a3 = a.dim() == 3, b3 = b.dim() == 3;
  const int64_t batch = a3 ? a.size(0) : (b3 ? b.size(0) : 1);
  const int64_t M = transpose_a ? a.size(-1) : a.size(-2), K = transpose_a ? a.size(-2) : a.size(-1);
  const int64_t N = transpose_b ? b.size(-2) : b.size(-1);
  Tensor out = (a3 || b3) ? Tensor::empty({batch, M, N}, a.dtype(), Device::cuda) : Tensor::empty({M, N}, a.dtype(), Device::cuda);
  if (out.numel() == 0) return out;
  if (K == 0) {
    out.fill_(0);
    return out;
  }
  const int64_t lda = a.size(-1), ldb = b.size(-1);
  if (a3 && !b3 && !transpose_a) {
    // A shared right side: the batch folds into the rows of one GEMM.
    gemm_rowmajor(a.dtype(), false, transpose_b, batch * M, N, K, a.raw_data(), lda, 0, b.raw_data(), ldb, 0, out.raw_data(), 0, 1);
    return out;
  }
  gemm_rowmajor(a.dtype(), transpose_a, transpose_b, M, N, K, a.raw_data(), lda, a3 ? M * K : 0, b.raw_data(), ldb, b3 ? K * N : 0,
                out.raw_data(), M * N, batch);
  return out;
}

}  // namespace cpoison::cuda
