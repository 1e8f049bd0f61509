// CPU matrix products through BLAS GEMM (OpenBLAS threads inside each call).
// Shapes: a [M,K] or [B,M,K] (stored transposed when transpose_a), b [K,N] or [B,K,N] (likewise).
#include <cblas.h>

#include "engine/backend/dispatch.h"
#include "engine/backend/nn.h"

namespace cpoison::cpu {

namespace {
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
          float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, 1.0f,
              a, (int)lda, b, (int)ldb, 0.0f, c, (int)ldc);
}
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const double* a, int64_t lda, const double* b, int64_t ldb,
          double* c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, 1.0,
              a, (int)lda, b, (int)ldb, 0.0, c, (int)ldc);
}
}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b) {
  const bool a3 = a.dim() == 3, b3 = b.dim() == 3;
  const int64_t batch = a3 ? a.size(0) : (b3 ? b.size(0) : 1);
  const int64_t M = transpose_a ? a.size(-1) : a.size(-2), K = transpose_a ? a.size(-2) : a.size(-1);
  const int64_t N = transpose_b ? b.size(-2) : b.size(-1);
  Tensor out = (a3 || b3) ? Tensor::empty({batch, M, N}, a.dtype()) : Tensor::empty({M, N}, a.dtype());
  if (out.numel() == 0) return out;
  if (K == 0) {
    out.fill_(0);
    return out;
  }
  const int64_t lda = a.size(-1), ldb = b.size(-1);
  float_dispatch(a.dtype(), "matmul", [&](auto tag) {
    using T = decltype(tag);
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    T* pc = out.data<T>();
    if (a3 && !b3 && !transpose_a) {
      // A shared right side: the batch folds into the rows of one GEMM.
      gemm(false, transpose_b, batch * M, N, K, pa, lda, pb, ldb, pc, N);
      return;
    }
    const int64_t a_step = a3 ? M * K : 0, b_step = b3 ? K * N : 0;
    for (int64_t i = 0; i < batch; ++i)
      gemm(transpose_a, transpose_b, M, N, K, pa + i * a_step, lda, pb + i * b_step, ldb, pc + i * M * N, N);
  });
  return out;
}

}  // namespace cpoison::cpu
