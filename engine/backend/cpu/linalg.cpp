// CPU reference linear-algebra kernels (engine/backend/linalg.h): M matrices of R rows and C
// columns, row-major. Every matrix is decomposed by LAPACK dgesdd in double precision (also for
// f32 input: the reference should be the most accurate of the backends), OpenMP over matrices;
// each output entry is summed over singular values in increasing index order, so the result
// does not depend on the thread count.
#include "engine/backend/linalg.h"

#include <lapacke.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/backend/dispatch.h"

namespace cpoison::cpu {

namespace {

// One thread's buffers for dgesdd on a matrix read as LAPACK's column-major layout.
struct SvdWorkspace {
  lapack_int m = 0, n = 0, k = 0;
  std::vector<double> a, s, u, vt, work;
  std::vector<lapack_int> iwork;

  SvdWorkspace(lapack_int rows, lapack_int cols) : m(rows), n(cols), k(std::min(rows, cols)) {
    a.resize((size_t)m * n);
    s.resize(k);
    u.resize((size_t)m * k);
    vt.resize((size_t)k * n);
    iwork.resize(8 * (size_t)k);
    double query = 0;
    lapack_int info = LAPACKE_dgesdd_work(LAPACK_COL_MAJOR, 'S', m, n, a.data(), m, s.data(), u.data(), m, vt.data(),
                                          k, &query, -1, iwork.data());
    work.resize(info == 0 ? (size_t)query + 1 : (size_t)(4 * k * k + 7 * k + 3 * std::max(m, n)) + 1);
  }

  // Decomposes the matrix now in `a`; returns LAPACK's info (0 on success).
  lapack_int decompose() {
    return LAPACKE_dgesdd_work(LAPACK_COL_MAJOR, 'S', m, n, a.data(), m, s.data(), u.data(), m, vt.data(), k,
                               work.data(), (lapack_int)work.size(), iwork.data());
  }
};

}  // namespace

Tensor singular_value_threshold(const Tensor& x, const Tensor& mask, int64_t max_rank, double threshold, double q) {
  const int64_t M = x.size(0), R = x.size(1), C = x.size(2);
  Tensor out = Tensor::empty({M, R, C}, x.dtype(), Device::cpu);
  if (out.numel() == 0) return out;
  const int64_t k = std::min(R, C);
  const int64_t rank = std::clamp<int64_t>(max_rank, 0, k);
  const double inv_q = 1.0 / q;
  int64_t failed_matrix = -1;
  lapack_int failed_info = 0;
  float_dispatch(x.dtype(), "singular_value_threshold", [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* px = x.data<scalar_t>();
    const scalar_t* pm = mask.data<scalar_t>();
    scalar_t* po = out.data<scalar_t>();
#pragma omp parallel
    {
      // The row-major R x C matrix A is, read column-major, the C x R matrix A^T = U' S V'^T,
      // so A[r][c] = sum_i s_i * V'^T[i, r] * U'[c, i].
      SvdWorkspace ws((lapack_int)C, (lapack_int)R);
      std::vector<double> kept_s((size_t)k);
#pragma omp for schedule(static)
      for (int64_t m = 0; m < M; ++m) {
        const scalar_t* src = px + m * R * C;
        const scalar_t* msk = pm + m * R * C;
        scalar_t* dst = po + m * R * C;
        for (int64_t e = 0; e < R * C; ++e) ws.a[e] = (double)src[e] * (double)msk[e];
        lapack_int info = ws.decompose();
        if (info != 0) {
#pragma omp critical(cpoison_usvt_failure)
          if (failed_matrix < 0 || m < failed_matrix) failed_matrix = m, failed_info = info;
          std::fill(dst, dst + R * C, scalar_t(0));
          continue;
        }
        int64_t used = 0;
        for (int64_t i = 0; i < rank; ++i)
          if (ws.s[i] >= threshold) kept_s[used++] = ws.s[i];
          else break;  // s is sorted: nothing later passes the threshold either
        for (int64_t r = 0; r < R; ++r)
          for (int64_t c = 0; c < C; ++c) {
            double v = 0;
            for (int64_t i = 0; i < used; ++i) v += kept_s[i] * ws.vt[i + r * k] * ws.u[c + i * C];
            v *= inv_q;
            dst[r * C + c] = (scalar_t)(v < 0.0 ? 0.0 : (v > 1.0 ? 1.0 : v));
          }
      }
    }
    return 0;
  });
  if (failed_matrix >= 0)
    fail("singular_value_threshold", "LAPACK dgesdd failed on matrix ", failed_matrix, " of ", M, " (", R, "x", C, ", info ",
         failed_info, failed_info > 0 ? ": the SVD did not converge; is the input finite?" : ": bad argument", ")");
  return out;
}

}  // namespace cpoison::cpu
