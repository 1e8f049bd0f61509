// CPU layout kernels: strided gather and block concatenation, any dtype (copied as raw bits).
// OpenMP runs over independent output rows, so results never depend on the thread count.
#include "engine/backend/shape.h"

#include <cstring>

#include "engine/backend/dispatch.h"

namespace cpoison::cpu {

namespace {
// Drops size-1 dims and merges neighbours that are laid out back to back in the source
// (stride[d] == stride[d+1] * shape[d+1]), so the innermost loop is as long as possible.
void coalesce(Shape& shape, Shape& strides) {
  Shape sh, st;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    if (!sh.empty() && st.back() == strides[d] * shape[d]) {
      sh.back() *= shape[d];
      st.back() = strides[d];
    } else {
      sh.push_back(shape[d]);
      st.push_back(strides[d]);
    }
  }
  if (sh.empty()) {  // a single element
    sh.push_back(1);
    st.push_back(0);
  }
  shape = std::move(sh);
  strides = std::move(st);
}

// Elements of type T (an unsigned integer of the dtype's width) gathered row by row.
template <class T>
void gather_typed(const T* src, T* out, const Shape& shape, const Shape& strides, int64_t offset) {
  const int64_t nd = (int64_t)shape.size();
  const int64_t inner = shape[nd - 1];
  const int64_t inner_stride = strides[nd - 1];
  const int64_t rows = shape_numel(shape) / inner;
#pragma omp parallel for schedule(static) if (rows * inner > 65536 && rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    // Source offset of the row's first element: decompose r over the outer dims.
    int64_t off = offset, rest = r;
    for (int64_t d = nd - 2; d >= 0; --d) {
      off += (rest % shape[d]) * strides[d];
      rest /= shape[d];
    }
    T* o = out + r * inner;
    const T* s = src + off;
    if (inner_stride == 1) {
      std::memcpy(o, s, inner * sizeof(T));
    } else {
      for (int64_t i = 0; i < inner; ++i) o[i] = s[i * inner_stride];
    }
  }
}
}  // namespace

Tensor strided_gather(const Tensor& src, const Shape& shape, const Shape& strides, int64_t offset) {
  Tensor out = Tensor::empty(shape, src.dtype(), Device::cpu);
  if (out.numel() == 0) return out;
  Shape sh = shape, st = strides;
  coalesce(sh, st);
  switch (dtype_size(src.dtype())) {
    case 1: gather_typed(static_cast<const uint8_t*>(src.raw_data()), static_cast<uint8_t*>(out.raw_data()), sh, st, offset); break;
    case 4: gather_typed(static_cast<const uint32_t*>(src.raw_data()), static_cast<uint32_t*>(out.raw_data()), sh, st, offset); break;
    case 8: gather_typed(static_cast<const uint64_t*>(src.raw_data()), static_cast<uint64_t*>(out.raw_data()), sh, st, offset); break;
    default: fail("strided_gather", "unsupported dtype ", dtype_name(src.dtype()));
  }
  return out;
}

Tensor concat_blocks(const std::vector<Tensor>& parts, const std::vector<int64_t>& widths, int64_t outer) {
  CP_CHECK(!parts.empty() && parts.size() == widths.size(), "concat_blocks", parts.size(), " parts but ", widths.size(), " widths");
  int64_t total = 0;
  for (int64_t w : widths) total += w;
  const DType dt = parts[0].dtype();
  const size_t es = dtype_size(dt);
  Tensor out = Tensor::empty({outer, total}, dt, Device::cpu);
  if (out.numel() == 0) return out;
  char* o = static_cast<char*>(out.raw_data());
  std::vector<const char*> src(parts.size());
  for (size_t p = 0; p < parts.size(); ++p) src[p] = static_cast<const char*>(parts[p].raw_data());
#pragma omp parallel for schedule(static) if (outer * total > 65536 && outer > 1)
  for (int64_t r = 0; r < outer; ++r) {
    char* row = o + (size_t)(r * total) * es;
    for (size_t p = 0; p < parts.size(); ++p) {
      const size_t bytes = (size_t)widths[p] * es;
      if (bytes == 0) continue;
      std::memcpy(row, src[p] + (size_t)r * bytes, bytes);
      row += bytes;
    }
  }
  return out;
}

}  // namespace cpoison::cpu
