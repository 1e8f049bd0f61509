// CPU 2-d convolution through oneDNN (forward, backward data, backward weights), f32, groups 1.
// Layout: x [N,C,H,W], weight [Cout,C,KH,KW], y [N,Cout,Ho,Wo], all NCHW and packed, in and out.
//
// Per shape, pass and thread count a plan holds oneDNN's primitive for the pass and the reorders
// between our plain NCHW tensors and the blocked formats (nChw8c on AVX2) that oneDNN's direct
// JIT kernels want: the primitive is created with format `any`, and each operand whose chosen
// format differs from plain is reordered into a temporary. Plans are cached per thread (primitive creation costs far more than a
// small conv); the thread count is part of the key, since oneDNN sizes its work split when a
// primitive is created. Scratchpads are ours (scratchpad_mode::user), reused across calls.
//
// Numerics: oneDNN accumulates in f32 in an order that depends on its blocking and thread split,
// so results agree with the reference (conv.cpp) to rounding, are bitwise reproducible run to run
// for a fixed thread count, and may differ in the last bits across thread counts (the weight
// gradient sums per-thread partial results). cpu_deterministic() keeps the reference kernels.
// This file is the only user of oneDNN's convolution API.
#include "engine/backend/cpu/conv.h"

#ifdef CPOISON_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#include <omp.h>

#include <array>
#include <map>
#include <memory>
#include <unordered_map>
#endif

#include "engine/error.h"

namespace cpoison::cpu::onednn {

#ifdef CPOISON_DNNL

namespace {

namespace dn = dnnl;
using tag = dn::memory::format_tag;
using dt = dn::memory::data_type;

dn::engine& cpu_engine() {
  static dn::engine e(dn::engine::kind::cpu, 0);
  return e;
}

dn::stream& cpu_stream() {
  thread_local dn::stream s(cpu_engine());
  return s;
}

// Grows to the largest scratchpad asked for on this thread; 64-byte aligned.
void* scratchpad(size_t bytes) {
  struct Buffer {
    void* p = nullptr;
    size_t size = 0;
    ~Buffer() { std::free(p); }
  };
  thread_local Buffer buf;
  if (bytes > buf.size) {
    std::free(buf.p);
    buf.size = (bytes + 63) / 64 * 64;
    buf.p = std::aligned_alloc(64, buf.size);
    if (!buf.p) fail("conv2d", "out of host memory allocating a ", bytes, "-byte oneDNN scratchpad");
  }
  return buf.p;
}

enum class Pass { forward, backward_data, backward_weights };

// N, C, H, W, Cout, KH, KW, stride, padding, bias, pass, threads.
using Key = std::array<int64_t, 12>;

// One operand: the plain NCHW layout we hold, the layout the primitive wants, and the reorder
// between them (plain -> wanted for inputs, wanted -> plain for the output) when they differ.
struct Operand {
  dn::memory::desc plain, wanted;
  dn::reorder reorder;
  bool reordered = false;
};

struct Plan {
  bool ok = false;  // false: oneDNN has no implementation here; the reference runs instead
  dn::primitive prim;
  std::string impl;
  // forward: src, weights, dst; backward data: diff_dst, weights, diff_src;
  // backward weights: diff_dst, src, diff_weights.
  Operand a, b, out;
  dn::memory::desc bias;
  size_t scratch = 0;
};

Operand operand(const dn::memory::desc& plain, const dn::memory::desc& wanted, bool is_output) {
  Operand o{plain, wanted, {}, false};
  if (plain != wanted) {
    o.reordered = true;
    o.reorder = is_output ? dn::reorder(dn::reorder::primitive_desc(cpu_engine(), wanted, cpu_engine(), plain))
                          : dn::reorder(dn::reorder::primitive_desc(cpu_engine(), plain, cpu_engine(), wanted));
  }
  return o;
}

struct Dims {
  dn::memory::dims x, w, y, strides, pad;
};

Dims dims_of(const Key& k) {
  const int64_t N = k[0], C = k[1], H = k[2], W = k[3], Cout = k[4], KH = k[5], KW = k[6], s = k[7], p = k[8];
  const int64_t Ho = (H + 2 * p - KH) / s + 1, Wo = (W + 2 * p - KW) / s + 1;
  return Dims{{N, C, H, W}, {Cout, C, KH, KW}, {N, Cout, Ho, Wo}, {s, s}, {p, p}};
}

dn::convolution_forward::primitive_desc forward_pd(const Key& k, bool bias, const dn::primitive_attr& attr) {
  const Dims d = dims_of(k);
  auto any = [](const dn::memory::dims& v) { return dn::memory::desc(v, dt::f32, tag::any); };
  if (bias) {
    dn::convolution_forward::desc desc(dn::prop_kind::forward_training, dn::algorithm::convolution_direct, any(d.x), any(d.w),
                                       dn::memory::desc({d.w[0]}, dt::f32, tag::x), any(d.y), d.strides, d.pad, d.pad);
    return dn::convolution_forward::primitive_desc(desc, attr, cpu_engine());
  }
  dn::convolution_forward::desc desc(dn::prop_kind::forward_training, dn::algorithm::convolution_direct, any(d.x), any(d.w),
                                     any(d.y), d.strides, d.pad, d.pad);
  return dn::convolution_forward::primitive_desc(desc, attr, cpu_engine());
}

Plan make_plan(const Key& k) {
  Plan plan;
  const Dims d = dims_of(k);
  const bool bias = k[9] != 0;
  const Pass pass = (Pass)k[10];
  auto plain = [](const dn::memory::dims& v) { return dn::memory::desc(v, dt::f32, tag::nchw); };
  auto any = [](const dn::memory::dims& v) { return dn::memory::desc(v, dt::f32, tag::any); };
  dn::primitive_attr attr;
  attr.set_scratchpad_mode(dn::scratchpad_mode::user);
  try {
    auto fwd = forward_pd(k, bias && pass == Pass::forward, attr);
    if (pass == Pass::forward) {
      plan.prim = dn::convolution_forward(fwd);
      plan.impl = fwd.impl_info_str();
      plan.a = operand(plain(d.x), fwd.src_desc(), false);
      plan.b = operand(plain(d.w), fwd.weights_desc(), false);
      plan.out = operand(plain(d.y), fwd.dst_desc(), true);
      if (bias) plan.bias = fwd.bias_desc();
      plan.scratch = fwd.scratchpad_desc().get_size();
    } else if (pass == Pass::backward_data) {
      dn::convolution_backward_data::desc desc(dn::algorithm::convolution_direct, any(d.x), any(d.w), any(d.y), d.strides, d.pad,
                                               d.pad);
      dn::convolution_backward_data::primitive_desc pd(desc, attr, cpu_engine(), fwd);
      plan.prim = dn::convolution_backward_data(pd);
      plan.impl = pd.impl_info_str();
      plan.a = operand(plain(d.y), pd.diff_dst_desc(), false);
      plan.b = operand(plain(d.w), pd.weights_desc(), false);
      plan.out = operand(plain(d.x), pd.diff_src_desc(), true);
      plan.scratch = pd.scratchpad_desc().get_size();
    } else {
      dn::convolution_backward_weights::desc desc(dn::algorithm::convolution_direct, any(d.x), any(d.w), any(d.y), d.strides,
                                                  d.pad, d.pad);
      dn::convolution_backward_weights::primitive_desc pd(desc, attr, cpu_engine(), fwd);
      plan.prim = dn::convolution_backward_weights(pd);
      plan.impl = pd.impl_info_str();
      plan.a = operand(plain(d.y), pd.diff_dst_desc(), false);
      plan.b = operand(plain(d.x), pd.src_desc(), false);
      plan.out = operand(plain(d.w), pd.diff_weights_desc(), true);
      plan.scratch = pd.scratchpad_desc().get_size();
    }
    plan.ok = true;
  } catch (const dn::error&) {
    plan.ok = false;  // unimplemented for these shapes: the caller runs the reference
  }
  return plan;
}

const Plan& plan_for(Pass pass, int64_t N, int64_t C, int64_t H, int64_t W, int64_t Cout, int64_t KH, int64_t KW, int64_t stride,
                     int64_t padding, bool bias) {
  thread_local std::map<Key, std::unique_ptr<Plan>> plans;
  const Key k{N, C, H, W, Cout, KH, KW, stride, padding, bias ? 1 : 0, (int64_t)pass, (int64_t)omp_get_max_threads()};
  auto it = plans.find(k);
  if (it == plans.end()) it = plans.emplace(k, std::make_unique<Plan>(make_plan(k))).first;
  return *it->second;
}

// A oneDNN memory over the plain tensor t, or over a reordered copy of it in `temp`.
dn::memory input(const Operand& o, const Tensor& t, Tensor& temp) {
  dn::memory user(o.plain, cpu_engine(), t.raw_data());
  if (!o.reordered) return user;
  temp = Tensor::empty({(int64_t)o.wanted.get_size()}, DType::u8);
  dn::memory m(o.wanted, cpu_engine(), temp.raw_data());
  o.reorder.execute(cpu_stream(), user, m);
  return m;
}

// The primitive's output memory: the plain result itself, or a temporary in the wanted format.
dn::memory output(const Operand& o, const Tensor& result, Tensor& temp) {
  if (!o.reordered) return dn::memory(o.plain, cpu_engine(), result.raw_data());
  temp = Tensor::empty({(int64_t)o.wanted.get_size()}, DType::u8);
  return dn::memory(o.wanted, cpu_engine(), temp.raw_data());
}

void finish_output(const Operand& o, dn::memory m, const Tensor& result) {
  if (!o.reordered) return;
  dn::memory user(o.plain, cpu_engine(), result.raw_data());
  o.reorder.execute(cpu_stream(), m, user);
}

// Runs plan.prim with args {arg_a: a, arg_b: b, arg_out: result} (+ bias), reordering around it.
void execute(const Plan& plan, int arg_a, const Tensor& a, int arg_b, const Tensor& b, int arg_out, const Tensor& result,
             const Tensor& bias) {
  Tensor ta, tb, tout;
  dn::memory ma = input(plan.a, a, ta), mb = input(plan.b, b, tb), mo = output(plan.out, result, tout);
  std::unordered_map<int, dn::memory> args{{arg_a, ma}, {arg_b, mb}, {arg_out, mo}};
  if (bias.defined()) args.emplace(DNNL_ARG_BIAS, dn::memory(plan.bias, cpu_engine(), bias.raw_data()));
  if (plan.scratch) args.emplace(DNNL_ARG_SCRATCHPAD, dn::memory(dn::memory::desc({(int64_t)plan.scratch}, dt::u8, tag::x),
                                                                cpu_engine(), scratchpad(plan.scratch)));
  plan.prim.execute(cpu_stream(), args);
  finish_output(plan.out, mo, result);
  cpu_stream().wait();
}

}  // namespace

bool available() { return true; }

std::string version() {
  const dnnl_version_t* v = dnnl_version();
  return "oneDNN " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
}

bool supports(DType dtype, int64_t groups) { return dtype == DType::f32 && groups == 1; }

std::string forward_implementation(const Shape& x, const Shape& w, int64_t stride, int64_t padding) {
  const Plan& p = plan_for(Pass::forward, x[0], x[1], x[2], x[3], w[0], w[2], w[3], stride, padding, false);
  return p.ok ? p.impl : "reference";
}

Tensor conv2d_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride, int64_t padding, int64_t groups) {
  const Shape &xs = x.shape(), &ws = weight.shape();
  const Plan& p = plan_for(Pass::forward, xs[0], xs[1], xs[2], xs[3], ws[0], ws[2], ws[3], stride, padding, bias.defined());
  if (!p.ok || groups != 1) return Tensor();
  const int64_t Ho = (xs[2] + 2 * padding - ws[2]) / stride + 1, Wo = (xs[3] + 2 * padding - ws[3]) / stride + 1;
  Tensor y = Tensor::empty({xs[0], ws[0], Ho, Wo}, DType::f32);
  execute(p, DNNL_ARG_SRC, x, DNNL_ARG_WEIGHTS, weight, DNNL_ARG_DST, y, bias);
  return y;
}

Tensor conv2d_backward_input(const Tensor& g, const Tensor& weight, int64_t in_h, int64_t in_w, int64_t stride, int64_t padding,
                             int64_t groups) {
  const Shape& ws = weight.shape();
  const Plan& p = plan_for(Pass::backward_data, g.size(0), ws[1], in_h, in_w, ws[0], ws[2], ws[3], stride, padding, false);
  if (!p.ok || groups != 1) return Tensor();
  Tensor dx = Tensor::empty({g.size(0), ws[1], in_h, in_w}, DType::f32);
  execute(p, DNNL_ARG_DIFF_DST, g, DNNL_ARG_WEIGHTS, weight, DNNL_ARG_DIFF_SRC, dx, Tensor());
  return dx;
}

Tensor conv2d_backward_weight(const Tensor& g, const Tensor& x, int64_t kernel_h, int64_t kernel_w, int64_t stride, int64_t padding,
                              int64_t groups) {
  const Shape& xs = x.shape();
  const Plan& p = plan_for(Pass::backward_weights, xs[0], xs[1], xs[2], xs[3], g.size(1), kernel_h, kernel_w, stride, padding, false);
  if (!p.ok || groups != 1) return Tensor();
  Tensor dw = Tensor::empty({g.size(1), xs[1], kernel_h, kernel_w}, DType::f32);
  execute(p, DNNL_ARG_DIFF_DST, g, DNNL_ARG_SRC, x, DNNL_ARG_DIFF_WEIGHTS, dw, Tensor());
  return dw;
}

#else  // built without oneDNN: every conv runs on the reference kernels

bool available() { return false; }
std::string version() { return "none"; }
bool supports(DType, int64_t) { return false; }
std::string forward_implementation(const Shape&, const Shape&, int64_t, int64_t) { return "reference"; }
Tensor conv2d_forward(const Tensor&, const Tensor&, const Tensor&, int64_t, int64_t, int64_t) { return Tensor(); }
Tensor conv2d_backward_input(const Tensor&, const Tensor&, int64_t, int64_t, int64_t, int64_t, int64_t) { return Tensor(); }
Tensor conv2d_backward_weight(const Tensor&, const Tensor&, int64_t, int64_t, int64_t, int64_t, int64_t) { return Tensor(); }

#endif

}  // namespace cpoison::cpu::onednn
