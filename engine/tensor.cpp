#include "engine/tensor.h"

#include <atomic>
#include <cstdlib>
#include <limits>
#include <malloc.h>
#include <cstring>
#include <ostream>
#include <sstream>

#include "engine/autograd.h"
#include "engine/backend/cpu/allocator.h"
#include "engine/backend/dispatch.h"
#include "engine/backend/memory.h"
#include "engine/size.h"

namespace cpoison {

namespace {
std::atomic<uint64_t> next_tensor_id{1};

// glibc serves blocks above 32 MB with fresh mmaps and returns freed memory to the kernel, so
// every large activation of a training step would be page-faulted anew (an 8x slowdown of a
// 33 MB clone measured here). Blocks of 1 MiB and more now come from engine/backend/cpu/
// allocator.cpp's bounded cache; these settings keep the smaller ones (and other heap users) in
// the heap.
const bool heap_tuned = [] {
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  return true;
}();

std::atomic<size_t> host_in_use{0}, host_peak{0};

void count_host_alloc(size_t n) {
  const size_t now = host_in_use.fetch_add(n, std::memory_order_relaxed) + n;
  size_t peak = host_peak.load(std::memory_order_relaxed);
  while (now > peak && !host_peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}

std::shared_ptr<TensorImpl> new_impl() {
  auto impl = std::make_shared<TensorImpl>();
  impl->id = next_tensor_id.fetch_add(1);
  return impl;
}
}  // namespace

size_t dtype_size(DType d) {
  switch (d) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::u8: return 1;
    case DType::i32: return 4;
    case DType::i64: return 8;
  }
  return 0;
}
const char* dtype_name(DType d) {
  switch (d) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::u8: return "u8";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
  }
  return "?";
}
const char* device_name(Device d) { return d == Device::cpu ? "cpu" : "cuda"; }
bool is_floating(DType d) { return d == DType::f32 || d == DType::f64; }
int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (auto v : s) n *= v;
  return n;
}
std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}
std::ostream& operator<<(std::ostream& os, const Shape& s) { return os << shape_str(s); }
std::ostream& operator<<(std::ostream& os, DType d) { return os << dtype_name(d); }
std::ostream& operator<<(std::ostream& os, Device d) { return os << device_name(d); }

// ---------------------------------------------------------------- storage
Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  size_t n = nbytes ? nbytes : 1;
  if (device == Device::cpu) {
    data_ = cpu::host_alloc(n);
    count_host_alloc(nbytes);
  } else {
#ifdef CPOISON_CUDA
    data_ = cuda::device_alloc(n);
#else
    no_cuda("Storage");
#endif
  }
}

Storage::~Storage() {
  if (device_ == Device::cpu) {
    cpu::host_free(data_, nbytes_ ? nbytes_ : 1);
    host_in_use.fetch_sub(nbytes_, std::memory_order_relaxed);
  } else {
#ifdef CPOISON_CUDA
    cuda::device_free(data_, nbytes_ ? nbytes_ : 1);
#endif
  }
}

size_t host_bytes_in_use() { return host_in_use.load(); }
size_t host_peak_bytes() { return host_peak.load(); }
void reset_host_peak_bytes() { host_peak.store(host_in_use.load()); }

#ifndef CPOISON_CUDA
bool cuda_available() { return false; }
#else
bool cuda_available() { return cuda::available(); }
#endif
void no_cuda(const char* what) {
  fail(what, "this build of cpoison has no CUDA backend (rebuild with nvcc present, meson -Dcuda=enabled)");
}

// ---------------------------------------------------------------- tensor basics
Shape contiguous_strides(const Shape& shape) {
  Shape st(shape.size());
  int64_t s = 1;
  for (int64_t i = (int64_t)shape.size() - 1; i >= 0; --i) {
    st[i] = s;
    s *= shape[i];
  }
  return st;
}

TensorImpl& Tensor::impl() const {
  if (!impl_) throw Error("Tensor", "use of an undefined tensor");
  return *impl_;
}

Tensor make_view(const Tensor& base, const Shape& shape, const Shape& strides, int64_t offset) {
  auto impl = new_impl();
  impl->storage = base.storage();
  impl->shape = shape;
  impl->strides = strides;
  impl->offset = offset;
  impl->dtype = base.dtype();
  return Tensor(impl);
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  // The one size check every tensor passes: no negative size, no product that wraps in int64
  // (shapes from files and flags were checked with the per-axis bound where they were read).
  const int64_t n = checked_numel(shape, "Tensor::empty", std::numeric_limits<int64_t>::max());
  const int64_t bytes = checked_mul(n, (int64_t)dtype_size(dtype), "Tensor::empty " + shape_str(shape));
  // Large host allocations are compared with the free memory first: Linux overcommits, so an
  // impossible one would otherwise succeed here and be killed later while being filled.
  if (device == Device::cpu && bytes >= (int64_t(1) << 30))
    check_allocation((uint64_t)bytes, "Tensor::empty " + shape_str(shape) + " " + dtype_name(dtype));
  auto impl = new_impl();
  impl->storage = std::make_shared<Storage>((size_t)bytes, device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(impl);
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) { return full(shape, 0.0, dtype, device); }
Tensor Tensor::ones(const Shape& shape, DType dtype, Device device) { return full(shape, 1.0, dtype, device); }
Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}
Tensor Tensor::scalar(double value, DType dtype, Device device) { return full({}, value, dtype, device); }

Tensor Tensor::arange(int64_t n, DType dtype, Device device) {
  std::vector<int64_t> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = i;
  return from_vector(v, {n}, dtype, device);
}

namespace {
template <class Dst, class Src>
void convert_copy(Dst* dst, const Src* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<Dst>(src[i]);
}

template <class Src>
void write_host(const Src* src, int64_t n, Tensor& t) {
  switch (t.dtype()) {
    case DType::f32: convert_copy(t.data<float>(), src, n); break;
    case DType::f64: convert_copy(t.data<double>(), src, n); break;
    case DType::u8: convert_copy(t.data<uint8_t>(), src, n); break;
    case DType::i32: convert_copy(t.data<int32_t>(), src, n); break;
    case DType::i64: convert_copy(t.data<int64_t>(), src, n); break;
  }
}

template <class Src>
Tensor from_host(const std::vector<Src>& v, const Shape& shape, DType dtype, Device device) {
  CP_CHECK((int64_t)v.size() == shape_numel(shape), "Tensor::from_vector", v.size(), " values do not fill shape ", shape);
  Tensor host = Tensor::empty(shape, dtype, Device::cpu);
  write_host(v.data(), (int64_t)v.size(), host);
  return device == Device::cpu ? host : host.to(device);
}
}  // namespace

Tensor Tensor::from_vector(const std::vector<float>& v, const Shape& s, DType d, Device dev) { return from_host(v, s, d, dev); }
Tensor Tensor::from_vector(const std::vector<double>& v, const Shape& s, DType d, Device dev) { return from_host(v, s, d, dev); }
Tensor Tensor::from_vector(const std::vector<int64_t>& v, const Shape& s, DType d, Device dev) { return from_host(v, s, d, dev); }
Tensor Tensor::from_vector(const std::vector<uint8_t>& v, const Shape& s, DType d, Device dev) { return from_host(v, s, d, dev); }

int64_t Tensor::size(int64_t d) const {
  int64_t n = dim();
  int64_t i = d < 0 ? d + n : d;
  CP_CHECK(i >= 0 && i < n, "Tensor::size", "dim ", d, " out of range for ", describe());
  return impl().shape[i];
}

bool Tensor::is_contiguous() const {
  const auto& sh = impl().shape;
  const auto& st = impl().strides;
  int64_t expect = 1;
  for (int64_t i = (int64_t)sh.size() - 1; i >= 0; --i) {
    if (sh[i] != 1 && st[i] != expect) return false;
    expect *= sh[i];
  }
  return true;
}

std::string Tensor::describe() const {
  if (!impl_) return "undefined";
  std::ostringstream os;
  os << dtype_name(dtype()) << shape_str(shape()) << " " << device_name(device());
  return os.str();
}

void* Tensor::raw_data() const { return (char*)storage()->data() + offset() * dtype_size(dtype()); }

template <class T>
static constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, float>) return DType::f32;
  else if constexpr (std::is_same_v<T, double>) return DType::f64;
  else if constexpr (std::is_same_v<T, uint8_t>) return DType::u8;
  else if constexpr (std::is_same_v<T, int32_t>) return DType::i32;
  else return DType::i64;
}

template <class T>
T* Tensor::data() const {
  CP_CHECK(dtype() == dtype_of<T>(), "Tensor::data", "asked for ", dtype_name(dtype_of<T>()), " data of ", describe());
  return static_cast<T*>(raw_data());
}
template float* Tensor::data<float>() const;
template double* Tensor::data<double>() const;
template uint8_t* Tensor::data<uint8_t>() const;
template int32_t* Tensor::data<int32_t>() const;
template int64_t* Tensor::data<int64_t>() const;

// ---------------------------------------------------------------- copies
namespace {
// Calls f(linear index into dst, element offset into src) for every element of a strided src.
template <class F>
void for_each_strided(const Shape& shape, const Shape& strides, int64_t offset, F f) {
  int64_t n = shape_numel(shape);
  int64_t nd = (int64_t)shape.size();
  std::vector<int64_t> idx(nd, 0);
  int64_t off = offset;
  for (int64_t i = 0; i < n; ++i) {
    f(i, off);
    for (int64_t d = nd - 1; d >= 0; --d) {
      if (++idx[d] < shape[d]) {
        off += strides[d];
        break;
      }
      off -= strides[d] * (shape[d] - 1);
      idx[d] = 0;
    }
  }
}

template <class Dst, class Src>
void host_strided_convert(const Tensor& src, Tensor& dst) {
  const Src* s = static_cast<const Src*>(src.storage()->data());
  Dst* d = static_cast<Dst*>(dst.raw_data());
  if (src.is_contiguous()) {
    convert_copy(d, s + src.offset(), src.numel());
    return;
  }
  for_each_strided(src.shape(), src.strides(), src.offset(), [&](int64_t i, int64_t o) { d[i] = static_cast<Dst>(s[o]); });
}

template <class Src>
void host_copy_from(const Tensor& src, Tensor& dst) {
  switch (dst.dtype()) {
    case DType::f32: host_strided_convert<float, Src>(src, dst); break;
    case DType::f64: host_strided_convert<double, Src>(src, dst); break;
    case DType::u8: host_strided_convert<uint8_t, Src>(src, dst); break;
    case DType::i32: host_strided_convert<int32_t, Src>(src, dst); break;
    case DType::i64: host_strided_convert<int64_t, Src>(src, dst); break;
  }
}

// dst: contiguous, same numel as src; any dtype and device combination.
void copy_into(const Tensor& src, Tensor& dst) {
  if (src.device() == Device::cpu && dst.device() == Device::cpu) {
    switch (src.dtype()) {
      case DType::f32: host_copy_from<float>(src, dst); break;
      case DType::f64: host_copy_from<double>(src, dst); break;
      case DType::u8: host_copy_from<uint8_t>(src, dst); break;
      case DType::i32: host_copy_from<int32_t>(src, dst); break;
      case DType::i64: host_copy_from<int64_t>(src, dst); break;
    }
    return;
  }
#ifdef CPOISON_CUDA
  if (src.device() == Device::cuda && dst.device() == Device::cuda) {
    cuda::strided_copy(src, dst);
    return;
  }
  // Cross-device: make a contiguous same-dtype copy on the source side, transfer, convert there.
  Tensor s = src;
  if (!s.is_contiguous() || s.dtype() != dst.dtype()) {
    Tensor tmp = Tensor::empty(src.shape(), dst.dtype(), src.device());
    copy_into(src, tmp);
    s = tmp;
  }
  size_t bytes = s.numel() * dtype_size(s.dtype());
  if (dst.device() == Device::cpu)
    cuda::copy_to_host(dst.raw_data(), s.raw_data(), bytes);
  else
    cuda::copy_to_device(dst.raw_data(), s.raw_data(), bytes);
#else
  no_cuda("Tensor copy");
#endif
}
}  // namespace

void Tensor::copy_(const Tensor& src) {
  CP_CHECK(src.shape() == shape(), "Tensor::copy_", "source ", src.describe(), " does not match destination ", describe());
  if (is_contiguous()) {
    copy_into(src, *this);
    return;
  }
  CP_CHECK(device() == Device::cpu, "Tensor::copy_", "non-contiguous destination on cuda is not supported: ", describe());
  Tensor tmp = Tensor::empty(shape(), dtype(), Device::cpu);
  copy_into(src, tmp);
  // scatter tmp through this tensor's strides
  size_t es = dtype_size(dtype());
  char* base = static_cast<char*>(storage()->data());
  const char* t = static_cast<const char*>(tmp.raw_data());
  for_each_strided(shape(), strides(), offset(), [&](int64_t i, int64_t o) { std::memcpy(base + o * es, t + i * es, es); });
}

void Tensor::fill_(double value) {
  if (device() == Device::cuda) {
#ifdef CPOISON_CUDA
    CP_CHECK(is_contiguous(), "Tensor::fill_", "non-contiguous cuda tensor ", describe());
    cuda::fill(*this, value);
    return;
#else
    no_cuda("Tensor::fill_");
#endif
  }
  Tensor src = Tensor::empty({}, DType::f64, Device::cpu);
  *src.data<double>() = value;
  Tensor b = make_view(src, shape(), Shape(shape().size(), 0), 0);
  copy_(b);
}

void Tensor::assign_(const Tensor& src) {
  TensorImpl& d = impl();
  const TensorImpl& s = src.impl();
  d.storage = s.storage;
  d.shape = s.shape;
  d.strides = s.strides;
  d.offset = s.offset;
  d.dtype = s.dtype;
  d.grad_holder = nullptr;
}

Tensor Tensor::detach() const { return make_view(*this, shape(), strides(), offset()); }

template <class T>
std::vector<T> Tensor::to_vector() const {
  Tensor host = Tensor::empty(shape(), dtype_of<T>(), Device::cpu);
  copy_into(*this, host);
  const T* p = host.data<T>();
  return std::vector<T>(p, p + host.numel());
}
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<uint8_t> Tensor::to_vector<uint8_t>() const;
template std::vector<int32_t> Tensor::to_vector<int32_t>() const;
template std::vector<int64_t> Tensor::to_vector<int64_t>() const;

double Tensor::item() const {
  CP_CHECK(numel() == 1, "Tensor::item", "needs exactly one element, got ", describe());
  return to_vector<double>()[0];
}

// ---------------------------------------------------------------- differentiable layout ops
Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  Tensor out = Tensor::empty(shape(), dtype(), device());
  copy_into(*this, out);
  if (autograd::needs_record({this}))
    autograd::record("contiguous", {*this}, out, [](const Tensor& g, const std::vector<bool>&) { return std::vector<Tensor>{g}; });
  return out;
}

Tensor Tensor::clone() const {
  Tensor out = Tensor::empty(shape(), dtype(), device());
  copy_into(*this, out);
  if (autograd::needs_record({this}))
    autograd::record("clone", {*this}, out, [](const Tensor& g, const std::vector<bool>&) { return std::vector<Tensor>{g}; });
  return out;
}

Tensor Tensor::to(Device dev) const {
  if (dev == device()) return *this;
  Tensor out = Tensor::empty(shape(), dtype(), dev);
  copy_into(*this, out);
  if (autograd::needs_record({this})) {
    Device back = device();
    autograd::record("to_device", {*this}, out, [back](const Tensor& g, const std::vector<bool>&) { return std::vector<Tensor>{g.to(back)}; });
  }
  return out;
}

Tensor Tensor::to(DType dt) const {
  if (dt == dtype()) return *this;
  Tensor out = Tensor::empty(shape(), dt, device());
  copy_into(*this, out);
  if (autograd::needs_record({this})) {
    CP_CHECK(is_floating(dt), "Tensor::to", "cannot differentiate a conversion of ", describe(), " to ", dtype_name(dt));
    DType back = dtype();
    autograd::record("to_dtype", {*this}, out, [back](const Tensor& g, const std::vector<bool>&) { return std::vector<Tensor>{g.to(back)}; });
  }
  return out;
}

Tensor Tensor::reshape(const Shape& new_shape_in) const {
  Shape ns = new_shape_in;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < ns.size(); ++i) {
    if (ns[i] == -1) {
      CP_CHECK(infer < 0, "reshape", "more than one -1 in ", ns);
      infer = (int64_t)i;
    } else {
      CP_CHECK(ns[i] >= 0, "reshape", "negative size in ", ns);
      known *= ns[i];
    }
  }
  if (infer >= 0) {
    CP_CHECK(known > 0 && numel() % known == 0, "reshape", "cannot reshape ", describe(), " into ", new_shape_in);
    ns[infer] = numel() / known;
  }
  CP_CHECK(shape_numel(ns) == numel(), "reshape", "cannot reshape ", describe(), " into ", new_shape_in);
  Tensor src = contiguous();
  Tensor out = make_view(src, ns, contiguous_strides(ns), src.offset());
  if (autograd::needs_record({&src})) {
    Shape old = shape();
    autograd::record("reshape", {src}, out, [old](const Tensor& g, const std::vector<bool>&) { return std::vector<Tensor>{g.reshape(old)}; });
  }
  return out;
}

Tensor Tensor::slice0(int64_t begin, int64_t end) const {
  CP_CHECK(dim() >= 1, "slice0", "needs at least 1 dim, got ", describe());
  CP_CHECK(0 <= begin && begin <= end && end <= size(0), "slice0", "range [", begin, ", ", end, ") out of bounds for ", describe());
  Shape ns = shape();
  ns[0] = end - begin;
  Tensor out = make_view(*this, ns, strides(), offset() + begin * strides()[0]);
  if (autograd::needs_record({this})) {
    Shape full = shape();
    DType dt = dtype();
    Device dev = device();
    autograd::record("slice0", {*this}, out, [full, dt, dev, begin, end](const Tensor& g, const std::vector<bool>&) {
      Tensor gi = Tensor::zeros(full, dt, dev);
      Tensor window = gi.slice0(begin, end);
      window.copy_(g);
      return std::vector<Tensor>{gi};
    });
  }
  return out;
}

// ---------------------------------------------------------------- autograd accessors
Tensor& Tensor::set_requires_grad(bool on) {
  CP_CHECK(!on || is_floating(dtype()), "set_requires_grad", "only float tensors can require a gradient, got ", describe());
  CP_CHECK(impl().is_leaf, "set_requires_grad", "only leaves can change requires_grad (use detach())");
  impl().requires_grad = on;
  return *this;
}
Tensor Tensor::grad() const { return impl().grad_holder ? Tensor(impl().grad_holder) : Tensor(); }
void Tensor::set_grad(const Tensor& g) { impl().grad_holder = g.defined() ? g.impl_ptr() : nullptr; }
void Tensor::zero_grad() { impl().grad_holder = nullptr; }
void Tensor::register_hook(GradHook hook) {
  CP_CHECK(requires_grad(), "register_hook", "tensor does not require a gradient: ", describe());
  impl().hooks.push_back(std::move(hook));
}

}  // namespace cpoison
