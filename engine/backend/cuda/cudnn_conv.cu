// 2-d convolution through cuDNN 9's legacy API (forward, backward data, backward filter).
// Layout: x [N,C,H,W], weight [Cout,C/groups,KH,KW], y [N,Cout,Ho,Wo], all NCHW and packed.
//
// Per shape (and dtype, TF32 switch, determinism switch) a plan holds the descriptors and, for
// each of the three passes, the algorithm chosen on its first use:
//  - deterministic mode (the default): cuDNN's heuristic ranking (cudnnGet*_v7), first algorithm
//    that is deterministic and fits the workspace limit, so the choice itself never depends on
//    timing and a seed reproduces a run bit for bit;
//  - otherwise: cudnnFind*Ex benchmarks the algorithms on the real buffers and keeps the fastest.
// Plans are meant for one host thread issuing GPU work (as every op of the backend is).
// All passes share one growing workspace (libraries.cu). TF32 is used only when allowed by
// set_allow_tf32(true): the descriptors are set to CUDNN_FMA_MATH otherwise.
// This file is the only user of cuDNN's convolution API (a move to the graph API touches only it).
#include <array>
#include <climits>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "engine/backend/cuda/libraries.cuh"
#include "engine/backend/nn.h"
#include "engine/backend/settings.h"

namespace cpoison::cuda {

namespace {

constexpr size_t kMaxWorkspace = size_t(1) << 30;

// Workspace limit for algorithm choice: 1 GiB, or half the free device memory when less.
size_t workspace_limit() {
  size_t free_bytes = 0, total = 0;
  CP_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
  return std::min(kMaxWorkspace, free_bytes / 2);
}

struct Choice {
  int algo = 0;
  size_t workspace = 0;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
};
// The acceptable algorithms of one pass, best first. Execution uses ranked[current] and moves
// on to the next one if cuDNN reports it unsupported for these descriptors after all.
struct Algo {
  bool chosen = false;
  std::vector<Choice> ranked;
  size_t current = 0;
};

struct Plan {
  int64_t N, C, H, W, Cout, KH, KW, stride, pad, groups, Ho, Wo;
  DType dtype;
  bool tf32, deterministic;
  cudnnTensorDescriptor_t x = nullptr, y = nullptr, bias = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  Algo fwd, bwd_data, bwd_filter;
  ~Plan() {
    if (x) cudnnDestroyTensorDescriptor(x);
    if (y) cudnnDestroyTensorDescriptor(y);
    if (bias) cudnnDestroyTensorDescriptor(bias);
    if (w) cudnnDestroyFilterDescriptor(w);
    if (conv) cudnnDestroyConvolutionDescriptor(conv);
  }
  cudnnDataType_t data_type() const { return dtype == DType::f32 ? CUDNN_DATA_FLOAT : CUDNN_DATA_DOUBLE; }
  // The math type the descriptor carries while choosing: TF32 tensor cores only when allowed.
  cudnnMathType_t search_math() const { return dtype == DType::f32 && !tf32 ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH; }
  bool math_allowed(cudnnMathType_t m) const {
    if (dtype != DType::f32 || tf32) return true;
    return m == CUDNN_FMA_MATH || m == CUDNN_DEFAULT_MATH;
  }
};

using Key = std::array<int64_t, 13>;

int as_int(int64_t v, const char* what) {
  CP_CHECK(v >= 0 && v <= INT_MAX, "conv2d", what, " ", v, " exceeds cuDNN's int range");
  return (int)v;
}

// The plan for a geometry, created (descriptors only) on first use. Plans live until exit.
Plan& plan_for(int64_t N, int64_t C, int64_t H, int64_t W, int64_t Cout, int64_t KH, int64_t KW, int64_t stride, int64_t pad,
               int64_t groups, DType dtype) {
  static std::mutex mutex;
  static std::map<Key, std::unique_ptr<Plan>> plans;
  const bool tf32 = allow_tf32(), det = deterministic();
  Key key{N, C, H, W, Cout, KH, KW, stride, pad, groups, (int64_t)dtype, (int64_t)tf32, (int64_t)det};
  std::lock_guard<std::mutex> lock(mutex);
  auto it = plans.find(key);
  if (it != plans.end()) return *it->second;

  auto p = std::make_unique<Plan>();
  Plan& P = *p;
  P.N = N, P.C = C, P.H = H, P.W = W, P.Cout = Cout, P.KH = KH, P.KW = KW, P.stride = stride, P.pad = pad, P.groups = groups;
  P.dtype = dtype, P.tf32 = tf32, P.deterministic = det;
  P.Ho = (H + 2 * pad - KH) / stride + 1;
  P.Wo = (W + 2 * pad - KW) / stride + 1;
  const cudnnDataType_t dt = P.data_type();
  CP_CUDNN_CHECK(cudnnCreateTensorDescriptor(&P.x));
  CP_CUDNN_CHECK(cudnnCreateTensorDescriptor(&P.y));
  CP_CUDNN_CHECK(cudnnCreateTensorDescriptor(&P.bias));
  CP_CUDNN_CHECK(cudnnCreateFilterDescriptor(&P.w));
  CP_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&P.conv));
  CP_CUDNN_CHECK(cudnnSetTensor4dDescriptor(P.x, CUDNN_TENSOR_NCHW, dt, as_int(N, "batch"), as_int(C, "channels"), as_int(H, "height"),
                                            as_int(W, "width")));
  CP_CUDNN_CHECK(cudnnSetFilter4dDescriptor(P.w, dt, CUDNN_TENSOR_NCHW, as_int(Cout, "out channels"), as_int(C / groups, "channels"),
                                            as_int(KH, "kernel"), as_int(KW, "kernel")));
  CP_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(P.conv, as_int(pad, "padding"), as_int(pad, "padding"), as_int(stride, "stride"),
                                                 as_int(stride, "stride"), 1, 1, CUDNN_CROSS_CORRELATION, dt));
  CP_CUDNN_CHECK(cudnnSetConvolutionGroupCount(P.conv, as_int(groups, "groups")));
  CP_CUDNN_CHECK(cudnnSetConvolutionMathType(P.conv, P.search_math()));
  int n = 0, c = 0, h = 0, w = 0;
  CP_CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(P.conv, P.x, P.w, &n, &c, &h, &w));
  CP_CHECK(n == N && c == Cout && h == P.Ho && w == P.Wo, "conv2d", "cuDNN output size [", n, ", ", c, ", ", h, ", ", w,
           "] differs from [", N, ", ", Cout, ", ", P.Ho, ", ", P.Wo, "]");
  CP_CUDNN_CHECK(cudnnSetTensor4dDescriptor(P.y, CUDNN_TENSOR_NCHW, dt, n, c, h, w));
  CP_CUDNN_CHECK(cudnnSetTensor4dDescriptor(P.bias, CUDNN_TENSOR_NCHW, dt, 1, c, 1, 1));
  return *(plans[key] = std::move(p));
}

// The acceptable entries of cuDNN's ranked list (by heuristics or by measured time), in order.
template <class Perf>
Algo pick(const Plan& P, const Perf* perf, int count, size_t limit, const char* pass) {
  Algo a;
  for (int i = 0; i < count; ++i) {
    const Perf& r = perf[i];
    if (r.status != CUDNN_STATUS_SUCCESS || r.memory > limit || !P.math_allowed(r.mathType)) continue;
    if (P.deterministic && r.determinism != CUDNN_DETERMINISTIC) continue;
    Choice c;
    c.algo = (int)r.algo;
    c.workspace = r.memory;
    c.math = (P.dtype == DType::f32 && !P.tf32) ? CUDNN_FMA_MATH : r.mathType;  // never TF32 unless allowed
    a.ranked.push_back(c);
  }
  a.chosen = !a.ranked.empty();
  if (a.chosen) return a;
  fail("conv2d", "cuDNN offers no usable ", pass, " algorithm for x [", P.N, ", ", P.C, ", ", P.H, ", ", P.W, "], weight [", P.Cout,
       ", ", P.C / P.groups, ", ", P.KH, ", ", P.KW, "], stride ", P.stride, ", padding ", P.pad, ", groups ", P.groups,
       P.deterministic ? " (deterministic mode)" : "");
}

// A scratch buffer for cudnnFind*Ex (returned to the allocator's cache afterwards).
Tensor find_scratch(size_t limit) { return Tensor::empty({(int64_t)std::max<size_t>(limit, 1)}, DType::u8, Device::cuda); }

void choose_forward(Plan& P, const void* x, const void* w, void* y) {
  if (P.fwd.chosen) return;
  const size_t limit = workspace_limit();
  cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
  int count = 0;
  CP_CUDNN_CHECK(cudnnSetConvolutionMathType(P.conv, P.search_math()));
  if (P.deterministic) {
    CP_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(cudnn_handle(), P.x, P.w, P.conv, P.y, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &count,
                                                          perf));
  } else {
    Tensor scratch = find_scratch(limit);
    CP_CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(cudnn_handle(), P.x, x, P.w, w, P.conv, P.y, y,
                                                          CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &count, perf, scratch.raw_data(), limit));
  }
  P.fwd = pick(P, perf, count, limit, "forward");
}

void choose_backward_data(Plan& P, const void* w, const void* dy, void* dx) {
  if (P.bwd_data.chosen) return;
  const size_t limit = workspace_limit();
  cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
  int count = 0;
  CP_CUDNN_CHECK(cudnnSetConvolutionMathType(P.conv, P.search_math()));
  if (P.deterministic) {
    CP_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(cudnn_handle(), P.w, P.y, P.conv, P.x, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                                                               &count, perf));
  } else {
    Tensor scratch = find_scratch(limit);
    CP_CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(cudnn_handle(), P.w, w, P.y, dy, P.conv, P.x, dx,
                                                               CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &count, perf, scratch.raw_data(),
                                                               limit));
  }
  P.bwd_data = pick(P, perf, count, limit, "backward-data");
}

void choose_backward_filter(Plan& P, const void* x, const void* dy, void* dw) {
  if (P.bwd_filter.chosen) return;
  const size_t limit = workspace_limit();
  cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
  int count = 0;
  CP_CUDNN_CHECK(cudnnSetConvolutionMathType(P.conv, P.search_math()));
  if (P.deterministic) {
    CP_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(cudnn_handle(), P.x, P.y, P.conv, P.w,
                                                                 CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &count, perf));
  } else {
    Tensor scratch = find_scratch(limit);
    CP_CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(cudnn_handle(), P.x, x, P.y, dy, P.conv, P.w, dw,
                                                                 CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &count, perf,
                                                                 scratch.raw_data(), limit));
  }
  P.bwd_filter = pick(P, perf, count, limit, "backward-filter");
}

// Runs one pass with the current choice of `a`, stepping down the ranking while cuDNN answers
// "not supported" (a heuristic entry can still be refused for a particular math type).
template <class Launch>
void run_pass(const Plan& P, Algo& a, Launch launch) {
  for (;;) {
    const Choice& c = a.ranked[a.current];
    void* ws = c.workspace ? workspace(c.workspace) : nullptr;
    CP_CUDNN_CHECK(cudnnSetConvolutionMathType(P.conv, c.math));
    cudnnStatus_t status = launch(c, ws);
    const bool unsupported = status >= CUDNN_STATUS_NOT_SUPPORTED && status < CUDNN_STATUS_NOT_SUPPORTED + 1000;
    if (unsupported && a.current + 1 < a.ranked.size()) {
      ++a.current;
      continue;
    }
    CP_CUDNN_CHECK(status);
    return;
  }
}

// alpha = 1, beta = 0 in the scaling type cuDNN expects for the data type.
struct Scale {
  float f1 = 1.0f, f0 = 0.0f;
  double d1 = 1.0, d0 = 0.0;
  const void* one(DType t) const { return t == DType::f32 ? (const void*)&f1 : (const void*)&d1; }
  const void* zero(DType t) const { return t == DType::f32 ? (const void*)&f0 : (const void*)&d0; }
};

void check_conv_inputs(const Tensor& a, const Tensor& b, const char* what) {
  CP_CHECK(a.device() == Device::cuda && b.device() == Device::cuda && a.is_contiguous() && b.is_contiguous() && a.dtype() == b.dtype() &&
               is_floating(a.dtype()),
           what, "needs contiguous cuda float tensors of one dtype, got ", a.describe(), " and ", b.describe());
}

}  // namespace

Tensor conv2d_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride, int64_t padding, int64_t groups) {
  check_conv_inputs(x, weight, "conv2d");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), Cout = weight.size(0), KH = weight.size(2),
                KW = weight.size(3);
  const int64_t Ho = (H + 2 * padding - KH) / stride + 1, Wo = (W + 2 * padding - KW) / stride + 1;
  Tensor y = Tensor::empty({N, Cout, Ho, Wo}, x.dtype(), Device::cuda);
  if (y.numel() == 0) return y;
  if (x.numel() == 0 || weight.numel() == 0) {  // an empty reduction: only the bias remains
    y.fill_(0.0);
    return bias.defined() ? add_channel_bias(y, bias, Ho * Wo) : y;
  }
  Plan& P = plan_for(N, C, H, W, Cout, KH, KW, stride, padding, groups, x.dtype());
  choose_forward(P, x.raw_data(), weight.raw_data(), y.raw_data());
  Scale s;
  run_pass(P, P.fwd, [&](const Choice& c, void* ws) {
    return cudnnConvolutionForward(cudnn_handle(), s.one(x.dtype()), P.x, x.raw_data(), P.w, weight.raw_data(), P.conv,
                                   (cudnnConvolutionFwdAlgo_t)c.algo, ws, c.workspace, s.zero(x.dtype()), P.y, y.raw_data());
  });
  if (bias.defined())
    CP_CUDNN_CHECK(cudnnAddTensor(cudnn_handle(), s.one(x.dtype()), P.bias, bias.raw_data(), s.one(x.dtype()), P.y, y.raw_data()));
  return y;
}

Tensor conv2d_backward_input(const Tensor& g, const Tensor& weight, int64_t in_h, int64_t in_w, int64_t stride, int64_t padding,
                             int64_t groups) {
  check_conv_inputs(g, weight, "conv2d backward");
  const int64_t N = g.size(0), Cout = weight.size(0), C = weight.size(1) * groups, KH = weight.size(2), KW = weight.size(3);
  Tensor dx = Tensor::empty({N, C, in_h, in_w}, g.dtype(), Device::cuda);
  if (dx.numel() == 0) return dx;
  if (g.numel() == 0 || weight.numel() == 0) {
    dx.fill_(0.0);
    return dx;
  }
  Plan& P = plan_for(N, C, in_h, in_w, Cout, KH, KW, stride, padding, groups, g.dtype());
  CP_CHECK(P.Ho == g.size(2) && P.Wo == g.size(3), "conv2d backward", "gradient ", g.describe(), " does not match the output size [",
           P.Ho, ", ", P.Wo, "] of an input ", in_h, "x", in_w);
  choose_backward_data(P, weight.raw_data(), g.raw_data(), dx.raw_data());
  Scale s;
  run_pass(P, P.bwd_data, [&](const Choice& c, void* ws) {
    return cudnnConvolutionBackwardData(cudnn_handle(), s.one(g.dtype()), P.w, weight.raw_data(), P.y, g.raw_data(), P.conv,
                                        (cudnnConvolutionBwdDataAlgo_t)c.algo, ws, c.workspace, s.zero(g.dtype()), P.x, dx.raw_data());
  });
  return dx;
}

Tensor conv2d_backward_weight(const Tensor& g, const Tensor& x, int64_t kernel_h, int64_t kernel_w, int64_t stride, int64_t padding,
                              int64_t groups) {
  check_conv_inputs(g, x, "conv2d backward");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), Cout = g.size(1);
  Tensor dw = Tensor::empty({Cout, C / groups, kernel_h, kernel_w}, g.dtype(), Device::cuda);
  if (dw.numel() == 0) return dw;
  if (g.numel() == 0 || x.numel() == 0) {
    dw.fill_(0.0);
    return dw;
  }
  Plan& P = plan_for(N, C, H, W, Cout, kernel_h, kernel_w, stride, padding, groups, g.dtype());
  CP_CHECK(P.Ho == g.size(2) && P.Wo == g.size(3), "conv2d backward", "gradient ", g.describe(), " does not match the output size [",
           P.Ho, ", ", P.Wo, "] of input ", x.describe());
  choose_backward_filter(P, x.raw_data(), g.raw_data(), dw.raw_data());
  Scale s;
  run_pass(P, P.bwd_filter, [&](const Choice& c, void* ws) {
    return cudnnConvolutionBackwardFilter(cudnn_handle(), s.one(g.dtype()), P.x, x.raw_data(), P.y, g.raw_data(), P.conv,
                                          (cudnnConvolutionBwdFilterAlgo_t)c.algo, ws, c.workspace, s.zero(g.dtype()), P.w, dw.raw_data());
  });
  return dw;
}

}  // namespace cpoison::cuda
