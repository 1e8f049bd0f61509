// CUDA layout kernels: strided gather and block concatenation, any dtype, copied as raw bits
// (elements moved as unsigned integers of the dtype's width).
#include "engine/backend/cuda/common.cuh"
#include "engine/backend/shape.h"

namespace cpoison::cuda {

namespace {
template <class U>
void gather_bits(const Tensor& src, Tensor& out, const StridedIndex& in) {
  const U* s = static_cast<const U*>(src.raw_data());
  U* o = static_cast<U*>(out.raw_data());
  for_each_index(out.numel(), [=] __device__(int64_t i) { o[i] = s[in.at(i)]; });
}

template <class U>
void copy_block(const Tensor& part, int64_t width, int64_t total, int64_t column, Tensor& out) {
  const U* s = static_cast<const U*>(part.raw_data());
  U* o = static_cast<U*>(out.raw_data()) + column;
  for_each_index(part.numel(), [=] __device__(int64_t i) { o[(i / width) * total + i % width] = s[i]; });
}

template <class F>
void by_width(DType dtype, const char* where, F&& f) {
  switch (dtype_size(dtype)) {
    case 1: f(uint8_t{}); break;
    case 4: f(uint32_t{}); break;
    case 8: f(uint64_t{}); break;
    default: fail(where, "unsupported dtype ", dtype_name(dtype));
  }
}
}  // namespace

Tensor strided_gather(const Tensor& src, const Shape& shape, const Shape& strides, int64_t offset) {
  CP_CHECK(shape.size() == strides.size(), "strided_gather", "shape ", shape, " and strides ", strides, " differ in length");
  Tensor out = Tensor::empty(shape, src.dtype(), Device::cuda);
  if (out.numel() == 0) return out;
  StridedIndex in = strided_indices(shape, std::vector<Shape>{strides}, std::vector<int64_t>{offset}, "strided_gather")[0];
  by_width(src.dtype(), "strided_gather", [&](auto tag) { gather_bits<decltype(tag)>(src, out, in); });
  return out;
}

Tensor concat_blocks(const std::vector<Tensor>& parts, const std::vector<int64_t>& widths, int64_t outer) {
  CP_CHECK(!parts.empty() && parts.size() == widths.size(), "concat_blocks", parts.size(), " parts but ", widths.size(), " widths");
  int64_t total = 0;
  for (int64_t w : widths) total += w;
  const DType dt = parts[0].dtype();
  Tensor out = Tensor::empty({outer, total}, dt, Device::cuda);
  if (out.numel() == 0) return out;
  int64_t column = 0;
  for (size_t p = 0; p < parts.size(); ++p) {
    if (widths[p] > 0)
      by_width(dt, "concat_blocks", [&](auto tag) { copy_block<decltype(tag)>(parts[p], widths[p], total, column, out); });
    column += widths[p];
  }
  return out;
}

}  // namespace cpoison::cuda
