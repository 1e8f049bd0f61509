// Tensor: a small value type over shared storage.
// Layout: row-major strides in elements; images are NCHW (N batch, C channels, H rows, W columns).
// A Tensor is a handle: copies share the same TensorImpl (data and autograd identity).
#pragma once
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "engine/error.h"

namespace cpoison {

enum class DType : uint8_t { f32, f64, u8, i32, i64 };
enum class Device : uint8_t { cpu, cuda };

using Shape = std::vector<int64_t>;

size_t dtype_size(DType d);
const char* dtype_name(DType d);
const char* device_name(Device d);
bool is_floating(DType d);
int64_t shape_numel(const Shape& s);
std::string shape_str(const Shape& s);
std::ostream& operator<<(std::ostream& os, const Shape& s);
std::ostream& operator<<(std::ostream& os, DType d);
std::ostream& operator<<(std::ostream& os, Device d);

// Owns bytes on one device. CPU memory is 64-byte aligned; CUDA memory comes from the
// backend's caching allocator (no cudaMalloc inside a training step).
class Storage {
public:
  Storage(size_t nbytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
};

// Bytes of CPU storage allocated now, and the most allocated at once since the last reset (the
// requested sizes; tests check with them that the tape lets go of tensors, benchmarks report them).
size_t host_bytes_in_use();
size_t host_peak_bytes();
void reset_host_peak_bytes();  // to the bytes in use now

class Tensor;
// A gradient hook sees the finished gradient of a tensor and returns the one to use instead
// (scale it, zero it, clip it...). Hooks run in registration order.
using GradHook = std::function<Tensor(const Tensor&)>;

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;
  int64_t offset = 0;  // in elements
  DType dtype = DType::f32;
  // autograd
  uint64_t id = 0;             // unique, never reused: the tape refers to tensors by id
  bool requires_grad = false;  // a leaf that wants a gradient, or the output of a recorded op
  bool is_leaf = true;
  std::shared_ptr<TensorImpl> grad_holder;  // accumulated .grad of a leaf
  std::vector<GradHook> hooks;
};

class Tensor {
public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- construction (contiguous, uninitialised unless named otherwise)
  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu);
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu);
  static Tensor ones(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu);
  static Tensor full(const Shape& shape, double value, DType dtype = DType::f32, Device device = Device::cpu);
  static Tensor arange(int64_t n, DType dtype = DType::i64, Device device = Device::cpu);
  // Copies host values into a new tensor of the given dtype (converted) on the given device.
  static Tensor from_vector(const std::vector<float>& v, const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu);
  static Tensor from_vector(const std::vector<double>& v, const Shape& shape, DType dtype = DType::f64, Device device = Device::cpu);
  static Tensor from_vector(const std::vector<int64_t>& v, const Shape& shape, DType dtype = DType::i64, Device device = Device::cpu);
  static Tensor from_vector(const std::vector<uint8_t>& v, const Shape& shape, DType dtype = DType::u8, Device device = Device::cpu);
  static Tensor scalar(double value, DType dtype = DType::f32, Device device = Device::cpu);

  // ---- metadata
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  const Shape& strides() const { return impl().strides; }
  int64_t offset() const { return impl().offset; }
  int64_t dim() const { return (int64_t)impl().shape.size(); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const { return shape_numel(impl().shape); }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().storage->device(); }
  bool is_contiguous() const;
  const std::shared_ptr<Storage>& storage() const { return impl().storage; }
  std::string describe() const;  // "f32[2, 3] cpu" for error messages

  // Pointer to the first element (storage + offset). T must match the dtype.
  template <class T> T* data() const;
  void* raw_data() const;

  // ---- conversions and copies (recorded by autograd where they are differentiable)
  Tensor contiguous() const;                // same tensor when already contiguous
  Tensor clone() const;                     // new storage, same values (differentiable)
  Tensor to(Device device) const;           // differentiable across devices
  Tensor to(DType dtype) const;             // differentiable between float dtypes
  Tensor reshape(const Shape& shape) const; // a view when contiguous (one -1 allowed)
  Tensor slice0(int64_t begin, int64_t end) const;  // view of rows [begin, end) along dim 0
  Tensor detach() const;                    // shares storage, outside autograd

  // Host copies of the values, converted to T (any dtype to any arithmetic T).
  template <class T> std::vector<T> to_vector() const;
  double item() const;  // the single value of a one-element tensor

  // In-place value writes (outside autograd; used by optimisers, EMA, initialisation).
  void copy_(const Tensor& src);  // shapes must match; devices/dtypes may differ
  void fill_(double value);
  // Replaces this tensor's data (storage, shape, strides, dtype) with src's, keeping its identity:
  // every handle to this tensor sees the new data (used to move module parameters in place).
  void assign_(const Tensor& src);

  // ---- autograd
  bool requires_grad() const { return impl().requires_grad; }
  Tensor& set_requires_grad(bool on);  // only on floating leaves
  bool is_leaf() const { return impl().is_leaf; }
  Tensor grad() const;  // undefined tensor when no gradient accumulated yet
  void set_grad(const Tensor& g);
  void zero_grad();  // drops the accumulated gradient
  void register_hook(GradHook hook);
  uint64_t id() const { return impl().id; }
  TensorImpl& impl() const;
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

private:
  std::shared_ptr<TensorImpl> impl_;
};

// Contiguous strides for a shape.
Shape contiguous_strides(const Shape& shape);
// A new TensorImpl viewing `storage` (fresh autograd identity).
Tensor make_view(const Tensor& base, const Shape& shape, const Shape& strides, int64_t offset);

}  // namespace cpoison
