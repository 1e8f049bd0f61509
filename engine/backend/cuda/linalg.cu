// CUDA linear algebra (engine/backend/linalg.h): universal singular value thresholding of many
// small matrices with cuSOLVER's Jacobi SVD, in double precision like the CPU reference.
// Matrices up to 32 x 32 go through gesvdjBatched (one call per chunk of the batch); larger
// ones through one economy gesvdj per matrix. The row-major R x C matrix A is handed over as the
// column-major C x R matrix Aᵀ = U S Vᵀ, so A[r][c] = sum_i s_i V[r, i] U[c, i].
#include <algorithm>
#include <climits>

#include "engine/backend/cuda/libraries.cuh"
#include "engine/backend/linalg.h"

namespace cpoison::cuda {

namespace {

// Where the factors of matrix m sit: U[c, i] = u[m * u_step + c + i * C], V[r, i] = v[m * v_step + r + i * R].
struct Factors {
  const double *s, *u, *v;
  int64_t s_step, u_step, v_step;
};

template <class T>
void usvt_chunk(const T* x, const T* mask, T* out, int64_t count, int64_t R, int64_t C, int64_t rank, double threshold, double inv_q,
                int64_t first_matrix, int64_t total_matrices) {
  const int64_t k = std::min(R, C), RC = R * C;
  const bool batched = R <= 32 && C <= 32;
  Tensor a = Tensor::empty({count * RC}, DType::f64, Device::cuda);
  Tensor s = Tensor::empty({count * k}, DType::f64, Device::cuda);
  const int64_t u_step = batched ? C * C : C * k, v_step = batched ? R * R : R * k;
  Tensor u = Tensor::empty({count * u_step}, DType::f64, Device::cuda);
  Tensor v = Tensor::empty({count * v_step}, DType::f64, Device::cuda);
  Tensor info = Tensor::zeros({count}, DType::i32, Device::cuda);
  double* pa = a.data<double>();
  for_each_index(count * RC, [=] __device__(int64_t e) { pa[e] = (double)x[e] * (double)mask[e]; });

  cusolverDnHandle_t h = cusolver_handle();
  gesvdjInfo_t params = nullptr;
  CP_CUSOLVER_CHECK(cusolverDnCreateGesvdjInfo(&params));
  struct ParamsGuard {
    gesvdjInfo_t p;
    ~ParamsGuard() { cusolverDnDestroyGesvdjInfo(p); }
  } guard{params};
  CP_CUSOLVER_CHECK(cusolverDnXgesvdjSetSortEig(params, 1));
  double *ps = s.data<double>(), *pu = u.data<double>(), *pv = v.data<double>();
  int* pinfo = info.data<int32_t>();
  const int m = (int)C, n = (int)R;
  int lwork = 0;
  if (batched) {
    CP_CUSOLVER_CHECK(cusolverDnDgesvdjBatched_bufferSize(h, CUSOLVER_EIG_MODE_VECTOR, m, n, pa, m, ps, pu, m, pv, n, &lwork, params,
                                                          (int)count));
    Tensor work = Tensor::empty({std::max(lwork, 1)}, DType::f64, Device::cuda);
    CP_CUSOLVER_CHECK(cusolverDnDgesvdjBatched(h, CUSOLVER_EIG_MODE_VECTOR, m, n, pa, m, ps, pu, m, pv, n, work.data<double>(), lwork,
                                               pinfo, params, (int)count));
  } else {
    CP_CUSOLVER_CHECK(cusolverDnDgesvdj_bufferSize(h, CUSOLVER_EIG_MODE_VECTOR, 1, m, n, pa, m, ps, pu, m, pv, n, &lwork, params));
    Tensor work = Tensor::empty({std::max(lwork, 1)}, DType::f64, Device::cuda);
    for (int64_t i = 0; i < count; ++i)
      CP_CUSOLVER_CHECK(cusolverDnDgesvdj(h, CUSOLVER_EIG_MODE_VECTOR, 1, m, n, pa + i * RC, m, ps + i * k, pu + i * u_step, m,
                                          pv + i * v_step, n, work.data<double>(), lwork, pinfo + i, params));
  }

  // Per matrix: the kept singular values, largest first (sorted here too, stably, so the order
  // never depends on the solver's), stopping at the first one under the threshold.
  Tensor kept = Tensor::empty({count * std::max<int64_t>(k, 1)}, DType::i32, Device::cuda);
  Tensor used = Tensor::empty({count}, DType::i32, Device::cuda);
  int* pk = kept.data<int32_t>();
  int* pused = used.data<int32_t>();
  for_each_index(count, [=] __device__(int64_t mat) {
    const double* sv = ps + mat * k;
    int* order = pk + mat * k;
    for (int64_t i = 0; i < k; ++i) {
      int64_t j = i;
      while (j > 0 && sv[order[j - 1]] < sv[i]) {
        order[j] = order[j - 1];
        --j;
      }
      order[j] = (int)i;
    }
    int count_kept = 0;
    while (count_kept < rank && sv[order[count_kept]] >= threshold) ++count_kept;
    pused[mat] = count_kept;
  });
  for_each_index(count * RC, [=] __device__(int64_t e) {
    const int64_t mat = e / RC, r = (e % RC) / C, c = e % C;
    const double* sv = ps + mat * k;
    const double* U = pu + mat * u_step;
    const double* V = pv + mat * v_step;
    const int* order = pk + mat * k;
    double acc = 0;
    for (int t = 0; t < pused[mat]; ++t) {
      const int i = order[t];
      acc += sv[i] * V[r + i * R] * U[c + i * C];
    }
    acc *= inv_q;
    out[e] = (T)(acc < 0.0 ? 0.0 : (acc > 1.0 ? 1.0 : acc));
  });

  std::vector<int32_t> host_info = info.to_vector<int32_t>();
  for (int64_t i = 0; i < count; ++i)
    CP_CHECK(host_info[i] == 0, "singular_value_threshold", "cuSOLVER gesvdj failed on matrix ", first_matrix + i, " of ", total_matrices, " (", R,
             "x", C, ", info ", host_info[i],
             host_info[i] > 0 ? ": the SVD did not converge; is the input finite?" : ": bad argument", ")");
}

template <class T>
Tensor usvt_typed(const Tensor& x, const Tensor& mask, int64_t max_rank, double threshold, double q) {
  const int64_t M = x.size(0), R = x.size(1), C = x.size(2);
  Tensor out = Tensor::empty({M, R, C}, x.dtype(), Device::cuda);
  if (out.numel() == 0) return out;
  CP_CHECK(R <= INT_MAX && C <= INT_MAX, "singular_value_threshold", "matrices of ", R, "x", C, " exceed cuSOLVER's int range");
  const int64_t rank = std::clamp<int64_t>(max_rank, 0, std::min(R, C));
  // Chunks of the batch bound the scratch memory (A, U, V in double) to about 256 MiB.
  const int64_t per_matrix = 8 * (R * C + R * R + C * C + std::min(R, C));
  const int64_t chunk = std::clamp<int64_t>(((int64_t)256 << 20) / per_matrix, 1, 1 << 20);
  const T* px = x.data<T>();
  const T* pm = mask.data<T>();
  T* po = out.data<T>();
  for (int64_t m0 = 0; m0 < M; m0 += chunk) {
    const int64_t count = std::min(chunk, M - m0);
    usvt_chunk<T>(px + m0 * R * C, pm + m0 * R * C, po + m0 * R * C, count, R, C, rank, threshold, 1.0 / q, m0, M);
  }
  return out;
}

}  // namespace

Tensor singular_value_threshold(const Tensor& x, const Tensor& mask, int64_t max_rank, double threshold, double q) {
  CP_CHECK(x.dim() == 3 && mask.shape() == x.shape() && mask.dtype() == x.dtype(), "singular_value_threshold", "needs x and mask [M, R, C] of one dtype, got ",
           x.describe(), " and ", mask.describe());
  return float_dispatch(x.dtype(), "singular_value_threshold", [&](auto tag) { return usvt_typed<decltype(tag)>(x, mask, max_rank, threshold, q); });
}

}  // namespace cpoison::cuda
