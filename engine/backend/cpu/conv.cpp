// CPU 2-d convolution. Layout: x [N,C,H,W], weight [Cout,C/groups,KH,KW], y [N,Cout,Ho,Wo].
//
// General case: im2col + BLAS GEMM. The batch is processed in chunks of `chunk` images, where the
// chunk size depends only on the shapes (never on the thread count). Inside a chunk the columns
// are laid out [Cg*KH*KW, chunk*Ho*Wo] (image-major within a row), so one GEMM per group covers
// the whole chunk; small late-layer images (4x4) still give the GEMM wide matrices. Chunks run in
// parallel, one thread each with a serial GEMM; the weight gradient sums the chunks in a fixed
// order (see gemm_backward_weight), so it is the same for any thread count.
//
// These are the reference kernels (cpu::reference, engine/backend/cpu/conv.h); the cpu::conv2d_*
// kernels at the end of this file choose between them and oneDNN (onednn_conv.cpp).
//
// 1x1 stride-1 unpadded convs need no im2col: with one image per chunk the GEMM reads x (and
// writes y / dx) directly. Depthwise-style convs (one input channel per group) use direct loops,
// since a GEMM with one row per group would be all overhead.
#include <cblas.h>

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "engine/backend/cpu/conv.h"
#include "engine/backend/dispatch.h"
#include "engine/backend/nn.h"
#include "engine/backend/settings.h"

namespace cpoison::cpu {

// Loops with less work than this run on one thread: a parallel region costs more than it saves.
constexpr int64_t kParallelWork = int64_t(1) << 15;

// Whether OpenBLAS threads through OpenMP (openblas_get_parallel() == 2: one shared thread pool,
// and a GEMM called inside a parallel region runs serially). Only then do we run chunks, or the
// loops between GEMMs (im2col, col2im, gathers), in OpenMP threads: with the pthreads OpenBLAS,
// OpenMP workers compete with OpenBLAS's own workers for the cores, which costs far more than
// the parallelism saves.
bool blas_shares_openmp() {
  static const bool shared_pool = openblas_get_parallel() == 2;
  return shared_pool;
}

// The helper loops of a single-chunk conv (inside a chunk-parallel region they run serially).
bool parallel_helpers(int64_t work) { return blas_shares_openmp() && work >= kParallelWork && !omp_in_parallel(); }

namespace {

void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
          int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, alpha,
              a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a, int64_t lda, const double* b,
          int64_t ldb, double beta, double* c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, alpha,
              a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

// Scratch memory reused across calls (per thread, per dtype, per role), so that the training
// loop does not page-fault fresh megabytes on every conv.
template <class T, int Role>
T* scratch(size_t n) {
  thread_local std::vector<T> buf;
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

struct Geometry {
  int64_t N, C, H, W, Cout, KH, KW, stride, pad, groups, Ho, Wo;
  int64_t Cg() const { return C / groups; }
  int64_t Coutg() const { return Cout / groups; }
  int64_t plane() const { return H * W; }
  int64_t out_plane() const { return Ho * Wo; }
  int64_t col_rows() const { return Cg() * KH * KW; }  // the GEMM's inner dimension
  bool pointwise() const { return KH == 1 && KW == 1 && stride == 1 && pad == 0; }
  bool depthwise() const { return Cg() == 1; }
  // Images per chunk: enough to give the GEMM at least kTargetCols columns and kMinColElems
  // column entries (small-K convs such as the RGB stem or 1x1 shortcuts would otherwise run
  // many tiny GEMMs), capped so that the column buffer stays under kMaxColElems (it then stays
  // in cache). A function of the shapes only, never of the thread count.
  int64_t chunk() const {
    constexpr int64_t kTargetCols = 1024, kMinColElems = int64_t(1) << 16, kMaxColElems = int64_t(1) << 18;
    const int64_t per_image = std::max<int64_t>(1, col_rows() * out_plane());
    int64_t nb = std::max<int64_t>((kTargetCols + out_plane() - 1) / out_plane(), (kMinColElems + per_image - 1) / per_image);
    nb = std::min<int64_t>(nb, std::max<int64_t>(1, kMaxColElems / per_image));
    return std::min(nb, N);
  }
};

Geometry geometry(const Shape& x, const Shape& w, int64_t stride, int64_t pad, int64_t groups) {
  Geometry g{x[0], x[1], x[2], x[3], w[0], w[2], w[3], stride, pad, groups, 0, 0};
  g.Ho = (g.H + 2 * pad - g.KH) / stride + 1;
  g.Wo = (g.W + 2 * pad - g.KW) / stride + 1;
  return g;
}

// Range [lo, hi) of output positions o whose input position o*stride - pad + k lies in [0, size).
inline void valid_range(int64_t k, int64_t stride, int64_t pad, int64_t size, int64_t out, int64_t& lo, int64_t& hi) {
  // o*stride >= pad - k  and  o*stride < size + pad - k
  int64_t a = pad - k, b = size + pad - k;
  lo = a <= 0 ? 0 : (a + stride - 1) / stride;
  hi = b <= 0 ? 0 : (b + stride - 1) / stride;
  lo = std::min(lo, out);
  hi = std::min(std::max(hi, lo), out);
}

// col[r, i*Ho*Wo + o] for rows r = (c, kh, kw) of group `grp`, images n0 .. n0+nb.
template <class T>
void im2col(const Geometry& g, const T* x, int64_t n0, int64_t nb, int64_t grp, T* col) {
  const int64_t rows = g.col_rows(), ld = nb * g.out_plane(), kk = g.KH * g.KW;
#pragma omp parallel for schedule(static) if (parallel_helpers(rows * ld))
  for (int64_t idx = 0; idx < rows * nb; ++idx) {
    int64_t r = idx / nb, i = idx % nb;
    int64_t c = r / kk, kh = (r % kk) / g.KW, kw = r % g.KW;
    const T* plane = x + ((n0 + i) * g.C + grp * g.Cg() + c) * g.plane();
    T* dst = col + r * ld + i * g.out_plane();
    int64_t oh_lo, oh_hi, ow_lo, ow_hi;
    valid_range(kh, g.stride, g.pad, g.H, g.Ho, oh_lo, oh_hi);
    valid_range(kw, g.stride, g.pad, g.W, g.Wo, ow_lo, ow_hi);
    // Rows are short (4 to 32 entries): plain loops, which the compiler vectorises, beat a
    // library call per row.
    for (int64_t p = 0; p < oh_lo * g.Wo; ++p) dst[p] = T(0);
    for (int64_t oh = oh_lo; oh < oh_hi; ++oh) {
      T* d = dst + oh * g.Wo;
      const T* src = plane + (oh * g.stride - g.pad + kh) * g.W - g.pad + kw;
      for (int64_t ow = 0; ow < ow_lo; ++ow) d[ow] = T(0);
      if (g.stride == 1) {
        for (int64_t ow = ow_lo; ow < ow_hi; ++ow) d[ow] = src[ow];
      } else {
        for (int64_t ow = ow_lo; ow < ow_hi; ++ow) d[ow] = src[ow * g.stride];
      }
      for (int64_t ow = ow_hi; ow < g.Wo; ++ow) d[ow] = T(0);
    }
    for (int64_t p = oh_hi * g.Wo; p < g.out_plane(); ++p) dst[p] = T(0);
  }
}

// The adjoint of im2col: dx planes of group `grp`, images n0 .. n0+nb, overwritten with the sum
// of their column entries. Each (image, channel) plane is one task, summed in a fixed order.
template <class T>
void col2im(const Geometry& g, const T* col, int64_t n0, int64_t nb, int64_t grp, T* dx) {
  const int64_t cg = g.Cg(), ld = nb * g.out_plane(), kk = g.KH * g.KW;
#pragma omp parallel for schedule(static) if (parallel_helpers(nb * cg * g.plane() * kk))
  for (int64_t idx = 0; idx < nb * cg; ++idx) {
    int64_t i = idx / cg, c = idx % cg;
    T* plane = dx + ((n0 + i) * g.C + grp * cg + c) * g.plane();
    std::fill(plane, plane + g.plane(), T(0));
    for (int64_t kh = 0; kh < g.KH; ++kh) {
      int64_t oh_lo, oh_hi;
      valid_range(kh, g.stride, g.pad, g.H, g.Ho, oh_lo, oh_hi);
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        int64_t ow_lo, ow_hi;
        valid_range(kw, g.stride, g.pad, g.W, g.Wo, ow_lo, ow_hi);
        const T* src = col + (c * kk + kh * g.KW + kw) * ld + i * g.out_plane();
        for (int64_t oh = oh_lo; oh < oh_hi; ++oh) {
          T* d = plane + (oh * g.stride - g.pad + kh) * g.W - g.pad + kw;
          const T* s = src + oh * g.Wo;
          if (g.stride == 1) {
            for (int64_t ow = ow_lo; ow < ow_hi; ++ow) d[ow] += s[ow];
          } else {
            for (int64_t ow = ow_lo; ow < ow_hi; ++ow) d[ow * g.stride] += s[ow];
          }
        }
      }
    }
  }
}

// buf[oc, i*P + p] = t[n0 + i, grp*cg + oc, p]: one group of a chunk of t [N, channels, P] laid out
// channel-major, as the GEMMs want it (P = plane, cg = channels per group).
template <class T>
void gather_chunk(const T* t, int64_t channels, int64_t plane, int64_t cg, int64_t n0, int64_t nb, int64_t grp, T* buf) {
#pragma omp parallel for schedule(static) if (parallel_helpers(cg * nb * plane))
  for (int64_t idx = 0; idx < cg * nb; ++idx) {
    int64_t oc = idx / nb, i = idx % nb;
    std::memcpy(buf + oc * nb * plane + i * plane, t + ((n0 + i) * channels + grp * cg + oc) * plane, sizeof(T) * plane);
  }
}

// The inverse of gather_chunk, adding the bias: t[n0 + i, grp*cg + oc, p] = buf[oc, i*P + p] + bias[grp*cg + oc].
template <class T>
void scatter_chunk(const T* buf, const T* bias, int64_t channels, int64_t plane, int64_t cg, int64_t n0, int64_t nb,
                   int64_t grp, T* t) {
#pragma omp parallel for schedule(static) if (parallel_helpers(cg * nb * plane))
  for (int64_t idx = 0; idx < cg * nb; ++idx) {
    int64_t oc = idx / nb, i = idx % nb;
    const T* s = buf + oc * nb * plane + i * plane;
    T* d = t + ((n0 + i) * channels + grp * cg + oc) * plane;
    T b = bias ? bias[grp * cg + oc] : T(0);
    for (int64_t p = 0; p < plane; ++p) d[p] = s[p] + b;
  }
}

template <class T>
void add_bias_planes(T* y, const T* bias, int64_t n_images, int64_t channels, int64_t plane) {
#pragma omp parallel for schedule(static) if (parallel_helpers(n_images * channels * plane))
  for (int64_t idx = 0; idx < n_images * channels; ++idx) {
    T b = bias[idx % channels];
    T* d = y + idx * plane;
    for (int64_t p = 0; p < plane; ++p) d[p] += b;
  }
}

// ---- depthwise-style convs (one input channel per group): direct loops.
// Output channel oc reads input channel oc / Coutg.

template <class T>
void depthwise_forward(const Geometry& g, const T* x, const T* w, const T* bias, T* y) {
  const int64_t coutg = g.Coutg();
#pragma omp parallel for schedule(static) if (g.N * g.Cout * g.out_plane() * g.KH * g.KW >= kParallelWork)
  for (int64_t idx = 0; idx < g.N * g.Cout; ++idx) {
    int64_t n = idx / g.Cout, oc = idx % g.Cout;
    const T* plane = x + (n * g.C + oc / coutg) * g.plane();
    const T* wk = w + oc * g.KH * g.KW;
    T* out = y + idx * g.out_plane();
    std::fill(out, out + g.out_plane(), bias ? bias[oc] : T(0));
    for (int64_t kh = 0; kh < g.KH; ++kh) {
      int64_t oh_lo, oh_hi;
      valid_range(kh, g.stride, g.pad, g.H, g.Ho, oh_lo, oh_hi);
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        int64_t ow_lo, ow_hi;
        valid_range(kw, g.stride, g.pad, g.W, g.Wo, ow_lo, ow_hi);
        T wv = wk[kh * g.KW + kw];
        for (int64_t oh = oh_lo; oh < oh_hi; ++oh) {
          const T* src = plane + (oh * g.stride - g.pad + kh) * g.W - g.pad + kw;
          T* d = out + oh * g.Wo;
          for (int64_t ow = ow_lo; ow < ow_hi; ++ow) d[ow] += wv * src[ow * g.stride];
        }
      }
    }
  }
}

template <class T>
void depthwise_backward_input(const Geometry& g, const T* gy, const T* w, T* dx) {
  const int64_t coutg = g.Coutg();
#pragma omp parallel for schedule(static) if (g.N * g.C * coutg * g.out_plane() * g.KH * g.KW >= kParallelWork)
  for (int64_t idx = 0; idx < g.N * g.C; ++idx) {
    int64_t n = idx / g.C, c = idx % g.C;
    T* plane = dx + idx * g.plane();
    std::fill(plane, plane + g.plane(), T(0));
    for (int64_t oc = c * coutg; oc < (c + 1) * coutg; ++oc) {
      const T* go = gy + (n * g.Cout + oc) * g.out_plane();
      const T* wk = w + oc * g.KH * g.KW;
      for (int64_t kh = 0; kh < g.KH; ++kh) {
        int64_t oh_lo, oh_hi;
        valid_range(kh, g.stride, g.pad, g.H, g.Ho, oh_lo, oh_hi);
        for (int64_t kw = 0; kw < g.KW; ++kw) {
          int64_t ow_lo, ow_hi;
          valid_range(kw, g.stride, g.pad, g.W, g.Wo, ow_lo, ow_hi);
          T wv = wk[kh * g.KW + kw];
          for (int64_t oh = oh_lo; oh < oh_hi; ++oh) {
            T* d = plane + (oh * g.stride - g.pad + kh) * g.W - g.pad + kw;
            const T* s = go + oh * g.Wo;
            for (int64_t ow = ow_lo; ow < ow_hi; ++ow) d[ow * g.stride] += wv * s[ow];
          }
        }
      }
    }
  }
}

template <class T>
void depthwise_backward_weight(const Geometry& g, const T* gy, const T* x, T* dw) {
  const int64_t coutg = g.Coutg(), kk = g.KH * g.KW;
#pragma omp parallel for schedule(static) if (g.N * g.Cout * g.out_plane() * kk >= kParallelWork)
  for (int64_t oc = 0; oc < g.Cout; ++oc) {
    T* dwk = dw + oc * kk;
    std::fill(dwk, dwk + kk, T(0));
    for (int64_t n = 0; n < g.N; ++n) {
      const T* plane = x + (n * g.C + oc / coutg) * g.plane();
      const T* go = gy + (n * g.Cout + oc) * g.out_plane();
      for (int64_t kh = 0; kh < g.KH; ++kh) {
        int64_t oh_lo, oh_hi;
        valid_range(kh, g.stride, g.pad, g.H, g.Ho, oh_lo, oh_hi);
        for (int64_t kw = 0; kw < g.KW; ++kw) {
          int64_t ow_lo, ow_hi;
          valid_range(kw, g.stride, g.pad, g.W, g.Wo, ow_lo, ow_hi);
          T acc = 0;
          for (int64_t oh = oh_lo; oh < oh_hi; ++oh) {
            const T* src = plane + (oh * g.stride - g.pad + kh) * g.W - g.pad + kw;
            const T* s = go + oh * g.Wo;
#pragma omp simd reduction(+ : acc)
            for (int64_t ow = ow_lo; ow < ow_hi; ++ow) acc += s[ow] * src[ow * g.stride];
          }
          dwk[kh * g.KW + kw] += acc;
        }
      }
    }
  }
}

// ---- im2col + GEMM paths
//
// The chunks of a batch run in parallel (OpenMP over chunks, one single-threaded GEMM per chunk
// and group: OpenBLAS's OpenMP build runs serially inside a parallel region). The small GEMMs of
// narrow networks (8 to 64 output channels) scale badly when OpenBLAS splits each one over the
// threads; whole chunks per thread keep both cores busy. A batch of one chunk runs serially with
// OpenBLAS threading inside the GEMM instead.

inline int64_t chunk_count(const Geometry& g) { return (g.N + g.chunk() - 1) / g.chunk(); }

template <class Body>
void for_each_chunk(const Geometry& g, const Body& body) {
  const int64_t nb_max = g.chunk(), chunks = chunk_count(g);
  if (chunks == 1 || !blas_shares_openmp()) {
    for (int64_t c = 0; c < chunks; ++c) body(c, c * nb_max, std::min(nb_max, g.N - c * nb_max));
    return;
  }
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t c = 0; c < chunks; ++c) body(c, c * nb_max, std::min(nb_max, g.N - c * nb_max));
}

// The GEMM operand of images n0 .. n0+nb, group grp: the im2col columns [Cg*KH*KW, nb*Ho*Wo]
// (a 1x1 conv of one image reads x directly), in this thread's scratch.
template <class T>
const T* chunk_columns(const Geometry& g, const T* x, int64_t n0, int64_t nb, int64_t grp) {
  if (g.pointwise() && nb == 1) return x + (n0 * g.C + grp * g.Cg()) * g.plane();
  T* buf = scratch<T, 0>(g.col_rows() * nb * g.out_plane());
  im2col(g, x, n0, nb, grp, buf);
  return buf;
}

// The output gradient of images n0 .. n0+nb, group grp, channel-major [Coutg, nb*Ho*Wo] (one
// image reads gy directly), in this thread's scratch.
template <class T>
const T* chunk_output_grad(const Geometry& g, const T* gy, int64_t n0, int64_t nb, int64_t grp) {
  const int64_t P = g.out_plane(), coutg = g.Coutg();
  if (nb == 1) return gy + (n0 * g.Cout + grp * coutg) * P;
  T* buf = scratch<T, 1>(coutg * nb * P);
  gather_chunk(gy, g.Cout, P, coutg, n0, nb, grp, buf);
  return buf;
}

template <class T>
void forward_chunk(const Geometry& g, const T* x, const T* w, const T* bias, T* y, int64_t n0, int64_t nb) {
  const int64_t P = g.out_plane(), rows = g.col_rows(), coutg = g.Coutg();
  for (int64_t grp = 0; grp < g.groups; ++grp) {
    const T* wg = w + grp * coutg * rows;
    const T* col = chunk_columns(g, x, n0, nb, grp);
    if (nb == 1) {
      gemm(false, false, coutg, P, rows, T(1), wg, rows, col, P, T(0), y + (n0 * g.Cout + grp * coutg) * P, P);
    } else {
      T* out = scratch<T, 1>(coutg * nb * P);
      gemm(false, false, coutg, nb * P, rows, T(1), wg, rows, col, nb * P, T(0), out, nb * P);
      scatter_chunk(out, bias, g.Cout, P, coutg, n0, nb, grp, y);
    }
  }
  if (nb == 1 && bias) add_bias_planes(y + n0 * g.Cout * P, bias, 1, g.Cout, P);
}

template <class T>
void gemm_forward(const Geometry& g, const T* x, const T* w, const T* bias, T* y) {
  for_each_chunk(g, [&](int64_t, int64_t n0, int64_t nb) { forward_chunk(g, x, w, bias, y, n0, nb); });
}

template <class T>
void gemm_backward_input(const Geometry& g, const T* gy, const T* w, T* dx) {
  const int64_t P = g.out_plane(), rows = g.col_rows(), coutg = g.Coutg();
  for_each_chunk(g, [&](int64_t, int64_t n0, int64_t nb) {
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      const T* wg = w + grp * coutg * rows;
      const T* go = chunk_output_grad(g, gy, n0, nb, grp);
      if (g.pointwise() && nb == 1) {
        gemm(true, false, rows, P, coutg, T(1), wg, rows, go, P, T(0), dx + (n0 * g.C + grp * g.Cg()) * g.plane(), P);
      } else {
        T* col = scratch<T, 0>(rows * nb * P);
        gemm(true, false, rows, nb * P, coutg, T(1), wg, rows, go, nb * P, T(0), col, nb * P);
        col2im(g, col, n0, nb, grp, dx);
      }
    }
  });
}

// dW = sum over chunks of G · colᵀ. The chunks are split into a fixed number of consecutive
// slots (a function of the shapes only); each slot accumulates its chunks in order with
// beta = 1, the slots run in parallel, and their sums are added in slot order: the same bits for
// any thread count. With few output channels (< 256) the transposed product
// dWᵀ[rows, Coutg] += col · Gᵀ runs faster in OpenBLAS (about 80 instead of 66 GFLOP/s for 64
// channels), and the final blocked transpose is small; with many it costs more than it saves.
template <class T>
void gemm_backward_weight(const Geometry& g, const T* gy, const T* x, T* dw) {
  constexpr int64_t kMaxSlots = 8;
  const int64_t nb_max = g.chunk(), P = g.out_plane(), rows = g.col_rows(), coutg = g.Coutg();
  const int64_t chunks = chunk_count(g), slots = std::min(chunks, kMaxSlots);
  const int64_t per_group = rows * coutg, per_slot = g.groups * per_group;
  const bool transposed = coutg < 256;
  // Slot 0 accumulates in place (dw itself unless transposed); the others in a shared buffer.
  // Scratch of the calling thread (reused across calls: no allocation per backward pass); the
  // slot workers only write through the pointer. Each slot's first GEMM has beta = 0.
  T* extra = scratch<T, 2>((size_t)((slots - 1) * per_slot + (transposed ? per_slot : 0)));
  auto slot_buffer = [&](int64_t s) -> T* {
    if (s == 0) return transposed ? extra + (slots - 1) * per_slot : dw;
    return extra + (s - 1) * per_slot;
  };
  auto run_slot = [&](int64_t s) {
    const int64_t c_lo = chunks * s / slots, c_hi = chunks * (s + 1) / slots;
    T* acc = slot_buffer(s);
    for (int64_t c = c_lo; c < c_hi; ++c) {
      const int64_t n0 = c * nb_max, nb = std::min(nb_max, g.N - n0);
      const T beta = c == c_lo ? T(0) : T(1);
      for (int64_t grp = 0; grp < g.groups; ++grp) {
        const T* go = chunk_output_grad(g, gy, n0, nb, grp);
        const T* col = chunk_columns(g, x, n0, nb, grp);
        if (transposed)
          gemm(false, true, rows, coutg, nb * P, T(1), col, nb * P, go, nb * P, beta, acc + grp * per_group, coutg);
        else
          gemm(false, true, coutg, rows, nb * P, T(1), go, nb * P, col, nb * P, beta, acc + grp * per_group, rows);
      }
    }
  };
  if (slots == 1 || !blas_shares_openmp()) {
    for (int64_t s = 0; s < slots; ++s) run_slot(s);
  } else {
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t s = 0; s < slots; ++s) run_slot(s);
  }
  // Slot sums, in slot order, into slot 0's buffer.
  T* total = slot_buffer(0);
  for (int64_t s = 1; s < slots; ++s) {
    const T* part = slot_buffer(s);
    for (int64_t i = 0; i < per_slot; ++i) total[i] += part[i];
  }
  if (!transposed) return;
  constexpr int64_t kTile = 32;
  for (int64_t grp = 0; grp < g.groups; ++grp) {
    const T* a = total + grp * per_group;
    T* d = dw + grp * per_group;
    for (int64_t r0 = 0; r0 < rows; r0 += kTile)
      for (int64_t o0 = 0; o0 < coutg; o0 += kTile)
        for (int64_t oc = o0; oc < std::min(o0 + kTile, coutg); ++oc)
          for (int64_t r = r0; r < std::min(r0 + kTile, rows); ++r) d[oc * rows + r] = a[r * coutg + oc];
  }
}

}  // namespace

namespace reference {

Tensor conv2d_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride, int64_t padding,
                      int64_t groups) {
  Geometry g = geometry(x.shape(), weight.shape(), stride, padding, groups);
  Tensor y = Tensor::empty({g.N, g.Cout, g.Ho, g.Wo}, x.dtype());
  if (y.numel() == 0) return y;
  float_dispatch(x.dtype(), "conv2d", [&](auto tag) {
    using T = decltype(tag);
    const T* b = bias.defined() ? bias.data<T>() : nullptr;
    if (g.depthwise())
      depthwise_forward(g, x.data<T>(), weight.data<T>(), b, y.data<T>());
    else
      gemm_forward(g, x.data<T>(), weight.data<T>(), b, y.data<T>());
  });
  return y;
}

Tensor conv2d_backward_input(const Tensor& gy, const Tensor& weight, int64_t in_h, int64_t in_w, int64_t stride,
                             int64_t padding, int64_t groups) {
  const Shape& ws = weight.shape();
  Geometry g = geometry({gy.size(0), ws[1] * groups, in_h, in_w}, ws, stride, padding, groups);
  Tensor dx = Tensor::empty({g.N, g.C, g.H, g.W}, gy.dtype());
  if (dx.numel() == 0) return dx;
  float_dispatch(gy.dtype(), "conv2d backward", [&](auto tag) {
    using T = decltype(tag);
    if (g.depthwise())
      depthwise_backward_input(g, gy.data<T>(), weight.data<T>(), dx.data<T>());
    else
      gemm_backward_input(g, gy.data<T>(), weight.data<T>(), dx.data<T>());
  });
  return dx;
}

Tensor conv2d_backward_weight(const Tensor& gy, const Tensor& x, int64_t kernel_h, int64_t kernel_w, int64_t stride,
                              int64_t padding, int64_t groups) {
  Shape ws{gy.size(1), x.size(1) / groups, kernel_h, kernel_w};
  Geometry g = geometry(x.shape(), ws, stride, padding, groups);
  Tensor dw = Tensor::zeros(ws, gy.dtype());
  if (g.N == 0 || dw.numel() == 0) return dw;
  float_dispatch(gy.dtype(), "conv2d backward", [&](auto tag) {
    using T = decltype(tag);
    if (g.depthwise())
      depthwise_backward_weight(g, gy.data<T>(), x.data<T>(), dw.data<T>());
    else
      gemm_backward_weight(g, gy.data<T>(), x.data<T>(), dw.data<T>());
  });
  return dw;
}

}  // namespace reference

// ---- the kernels of engine/backend/nn.h: oneDNN where it runs this conv, else the reference.

namespace {
// oneDNN for f32 convs with groups 1, except 1x1 convs with stride 2 (ResNet shortcuts): there the
// reorders of the large input (and of its gradient) to oneDNN's blocked layout cost more than the
// small product; `cpoison bench conv --cpu-time` measured the reference 1.6x faster at width 8
// (28x28) and level at width 64.
bool use_onednn(DType dtype, int64_t groups, int64_t kh, int64_t kw, int64_t stride) {
  if (!onednn::available() || !onednn::supports(dtype, groups) || cpu_deterministic()) return false;
  return !(kh == 1 && kw == 1 && stride > 1);
}
}  // namespace

Tensor conv2d_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride, int64_t padding,
                      int64_t groups) {
  if (use_onednn(x.dtype(), groups, weight.size(2), weight.size(3), stride) && x.numel() > 0 && weight.numel() > 0)
    if (Tensor y = onednn::conv2d_forward(x, weight, bias, stride, padding, groups); y.defined()) return y;
  return reference::conv2d_forward(x, weight, bias, stride, padding, groups);
}

Tensor conv2d_backward_input(const Tensor& gy, const Tensor& weight, int64_t in_h, int64_t in_w, int64_t stride,
                             int64_t padding, int64_t groups) {
  if (use_onednn(gy.dtype(), groups, weight.size(2), weight.size(3), stride) && gy.numel() > 0 && weight.numel() > 0)
    if (Tensor dx = onednn::conv2d_backward_input(gy, weight, in_h, in_w, stride, padding, groups); dx.defined()) return dx;
  return reference::conv2d_backward_input(gy, weight, in_h, in_w, stride, padding, groups);
}

Tensor conv2d_backward_weight(const Tensor& gy, const Tensor& x, int64_t kernel_h, int64_t kernel_w, int64_t stride,
                              int64_t padding, int64_t groups) {
  if (use_onednn(gy.dtype(), groups, kernel_h, kernel_w, stride) && gy.numel() > 0 && x.numel() > 0)
    if (Tensor dw = onednn::conv2d_backward_weight(gy, x, kernel_h, kernel_w, stride, padding, groups); dw.defined()) return dw;
  return reference::conv2d_backward_weight(gy, x, kernel_h, kernel_w, stride, padding, groups);
}

Tensor add_channel_bias(const Tensor& x, const Tensor& bias, int64_t inner) {
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  const int64_t channels = bias.numel(), rows = inner > 0 && channels > 0 ? x.numel() / inner : 0;
  float_dispatch(x.dtype(), "add_channel_bias", [&](auto tag) {
    using T = decltype(tag);
    const T* src = x.data<T>();
    const T* b = bias.data<T>();
    T* dst = y.data<T>();
#pragma omp parallel for schedule(static) if (x.numel() >= kParallelWork)
    for (int64_t r = 0; r < rows; ++r) {
      T bv = b[r % channels];
      for (int64_t p = 0; p < inner; ++p) dst[r * inner + p] = src[r * inner + p] + bv;
    }
  });
  return y;
}

Tensor channel_sum(const Tensor& x, int64_t channels, int64_t inner) {
  Tensor out = Tensor::empty({channels}, x.dtype());
  const int64_t outer = channels > 0 && inner > 0 ? x.numel() / (channels * inner) : 0;
  float_dispatch(x.dtype(), "channel_sum", [&](auto tag) {
    using T = decltype(tag);
    const T* src = x.data<T>();
    T* dst = out.data<T>();
    // One channel per task, summed in a fixed order (double accumulation keeps f32 sums accurate).
#pragma omp parallel for schedule(static) if (x.numel() >= kParallelWork)
    for (int64_t c = 0; c < channels; ++c) {
      double acc = 0;
      for (int64_t o = 0; o < outer; ++o) {
        const T* p = src + (o * channels + c) * inner;
#pragma omp simd reduction(+ : acc)
        for (int64_t i = 0; i < inner; ++i) acc += p[i];
      }
      dst[c] = (T)acc;
    }
  });
  return out;
}

}  // namespace cpoison::cpu
