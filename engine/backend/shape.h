// Layout kernels behind the shape ops (engine/ops/shape.h). Every dtype (f32, f64, u8, i32, i64);
// values are copied bit for bit, never converted.
#pragma once
#include <vector>

#include "engine/tensor.h"

namespace cpoison {
#define CP_SHAPE_KERNELS                                                                                  \
  /* Generic strided gather (transpose, permute, narrow, split pieces, broadcast_to).                   \
     src: contiguous. Returns a new contiguous tensor of src's dtype and the given `shape` whose        \
     element at multi-index i is src's element number `offset + sum_d i[d] * strides[d]`, counted       \
     from src.raw_data(). strides.size() == shape.size(); zero strides repeat (broadcast); every         \
     addressed element lies inside src (the ops layer guarantees it). */                                  \
  Tensor strided_gather(const Tensor& src, const Shape& shape, const Shape& strides, int64_t offset);    \
  /* Concatenation of row blocks (concat along any dim, zero padding in narrow's backward).             \
     parts: contiguous, one dtype, parts[p] holding outer * widths[p] elements, read as                  \
     [outer, widths[p]]. Returns [outer, sum_p widths[p]] (contiguous) whose row o is parts[0] row o,    \
     then parts[1] row o, ... . A part with width 0 contributes nothing. */                               \
  Tensor concat_blocks(const std::vector<Tensor>& parts, const std::vector<int64_t>& widths, int64_t outer);
namespace cpu { CP_SHAPE_KERNELS }
namespace cuda { CP_SHAPE_KERNELS }
}  // namespace cpoison
