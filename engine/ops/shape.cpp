// Shape ops. Copies go through two backend kernels (engine/backend/shape.h): strided_gather
// reads any view of a tensor's storage into a new contiguous tensor, concat_blocks glues row
// blocks together. Views never need a contiguous() copy first: the gather reads the input's
// storage through its own strides. Forward works for every dtype; gradients flow for floats.
#include "engine/ops/shape.h"

#include <numeric>

#include "engine/autograd.h"
#include "engine/backend/dispatch.h"
#include "engine/backend/shape.h"
#include "engine/ops/reduce.h"

namespace cpoison {

namespace {
void check_defined(const Tensor& a, const char* op) { CP_CHECK(a.defined(), op, "undefined input tensor"); }

// Wraps a possibly negative dim into [0, rank); an Error naming op and the tensor otherwise.
int64_t wrap_dim(int64_t d, int64_t rank, const char* op, const Tensor& a) {
  int64_t i = d < 0 ? d + rank : d;
  CP_CHECK(i >= 0 && i < rank, op, "dim ", d, " out of range for ", a.describe(), " (valid: ", -rank, " to ", rank - 1, ")");
  return i;
}

// A new contiguous tensor of `shape` whose element i is a's storage element
// a.offset() + extra_offset + sum_d i[d] * strides[d] (strides in storage elements).
Tensor gather(const Tensor& a, const Shape& shape, const Shape& strides, int64_t extra_offset) {
  if (shape_numel(shape) == 0) return Tensor::empty(shape, a.dtype(), a.device());
  // The whole storage as one contiguous 1-d tensor, so any view of it is reachable by offsets.
  int64_t storage_elems = (int64_t)(a.storage()->nbytes() / dtype_size(a.dtype()));
  Tensor flat = make_view(a.detach(), {storage_elems}, {1}, 0);
  return CP_BACKEND(a.device(), strided_gather)(flat, shape, strides, a.offset() + extra_offset);
}

int64_t prod(const Shape& s, size_t begin, size_t end) {
  int64_t p = 1;
  for (size_t i = begin; i < end; ++i) p *= s[i];
  return p;
}

// g (contiguous, shape `shape` with `length` at dim d) placed at [start, start + length) of a
// zero tensor that has `full` at dim d.
Tensor zero_pad(const Tensor& g, const Shape& shape, int64_t d, int64_t start, int64_t full) {
  const int64_t outer = prod(shape, 0, d), inner = prod(shape, d + 1, shape.size());
  const int64_t length = shape[d], after = full - start - length;
  Tensor before_zeros = Tensor::zeros({outer * start * inner}, g.dtype(), g.device());
  Tensor after_zeros = Tensor::zeros({outer * after * inner}, g.dtype(), g.device());
  Tensor out = CP_BACKEND(g.device(), concat_blocks)({before_zeros, g.contiguous(), after_zeros},
                                                     {start * inner, length * inner, after * inner}, outer);
  Shape out_shape = shape;
  out_shape[d] = full;
  return out.reshape(out_shape);
}
}  // namespace

Tensor flatten(const Tensor& a, int64_t start_dim) {
  check_defined(a, "flatten");
  CP_CHECK(a.dim() >= 1, "flatten", "needs at least 1 dim, got ", a.describe());
  int64_t s = wrap_dim(start_dim, a.dim(), "flatten", a);
  Shape ns(a.shape().begin(), a.shape().begin() + s);
  ns.push_back(prod(a.shape(), s, a.shape().size()));
  return a.reshape(ns);
}

Tensor permute(const Tensor& a, const std::vector<int64_t>& dims) {
  check_defined(a, "permute");
  const int64_t rank = a.dim();
  CP_CHECK((int64_t)dims.size() == rank, "permute", "got ", dims.size(), " dims ", dims, " for ", a.describe());
  std::vector<int64_t> perm(rank), inverse(rank, -1);
  for (int64_t i = 0; i < rank; ++i) {
    perm[i] = wrap_dim(dims[i], rank, "permute", a);
    CP_CHECK(inverse[perm[i]] < 0, "permute", "dims ", dims, " repeat dim ", dims[i], " (not a permutation)");
    inverse[perm[i]] = i;
  }
  Shape shape(rank), strides(rank);
  for (int64_t i = 0; i < rank; ++i) {
    shape[i] = a.shape()[perm[i]];
    strides[i] = a.strides()[perm[i]];
  }
  Tensor out = gather(a, shape, strides, 0);
  if (autograd::needs_record({&a})) {
    autograd::record("permute", {a}, out, [inverse](const Tensor& g, const std::vector<bool>&) {
      return std::vector<Tensor>{permute(g, inverse)};
    });
  }
  return out;
}

Tensor transpose(const Tensor& a, int64_t d0, int64_t d1) {
  check_defined(a, "transpose");
  int64_t i0 = wrap_dim(d0, a.dim(), "transpose", a), i1 = wrap_dim(d1, a.dim(), "transpose", a);
  std::vector<int64_t> perm(a.dim());
  std::iota(perm.begin(), perm.end(), 0);
  std::swap(perm[i0], perm[i1]);
  return permute(a, perm);
}

Tensor narrow(const Tensor& a, int64_t dim, int64_t start, int64_t length) {
  check_defined(a, "narrow");
  CP_CHECK(a.dim() >= 1, "narrow", "needs at least 1 dim, got ", a.describe());
  int64_t d = wrap_dim(dim, a.dim(), "narrow", a);
  const int64_t size = a.shape()[d];
  CP_CHECK(start >= 0 && length >= 0 && start + length <= size, "narrow", "range [", start, ", ", start + length,
           ") out of bounds for dim ", dim, " (size ", size, ") of ", a.describe());
  Shape shape = a.shape();
  shape[d] = length;
  Tensor out = gather(a, shape, a.strides(), start * a.strides()[d]);
  if (autograd::needs_record({&a})) {
    autograd::record("narrow", {a}, out, [shape, d, start, size](const Tensor& g, const std::vector<bool>&) {
      return std::vector<Tensor>{zero_pad(g, shape, d, start, size)};
    });
  }
  return out;
}

Tensor concat(const std::vector<Tensor>& parts, int64_t dim) {
  CP_CHECK(!parts.empty(), "concat", "needs at least one tensor");
  for (size_t p = 0; p < parts.size(); ++p) CP_CHECK(parts[p].defined(), "concat", "part ", p, " is undefined");
  const Tensor& first = parts[0];
  CP_CHECK(first.dim() >= 1, "concat", "cannot concatenate 0-d tensors (part 0 is ", first.describe(), ")");
  const int64_t d = wrap_dim(dim, first.dim(), "concat", first);
  Shape out_shape = first.shape();
  out_shape[d] = 0;
  for (size_t p = 0; p < parts.size(); ++p) {
    const Tensor& t = parts[p];
    CP_CHECK(t.dtype() == first.dtype() && t.device() == first.device(), "concat", "part ", p, " is ", t.describe(),
             " but part 0 is ", first.describe(), "; all parts need one dtype and device");
    bool match = t.dim() == first.dim();
    for (int64_t i = 0; match && i < first.dim(); ++i) match = i == d || t.shape()[i] == first.shape()[i];
    CP_CHECK(match, "concat", "part ", p, " has shape ", t.shape(), " but part 0 has ", first.shape(),
             "; shapes must match except along dim ", dim);
    out_shape[d] += t.shape()[d];
  }
  const int64_t outer = prod(out_shape, 0, d), inner = prod(out_shape, d + 1, out_shape.size());
  std::vector<Tensor> blocks;
  std::vector<int64_t> widths, sizes;
  for (const Tensor& t : parts) {
    blocks.push_back(t.detach().contiguous());
    widths.push_back(t.shape()[d] * inner);
    sizes.push_back(t.shape()[d]);
  }
  Tensor out = CP_BACKEND(first.device(), concat_blocks)(blocks, widths, outer).reshape(out_shape);
  if (autograd::needs_record(parts)) {
    autograd::record("concat", parts, out, [sizes, d](const Tensor& g, const std::vector<bool>& need) {
      std::vector<Tensor> grads(sizes.size());
      int64_t start = 0;
      for (size_t p = 0; p < sizes.size(); ++p) {
        if (need[p]) grads[p] = narrow(g, d, start, sizes[p]);
        start += sizes[p];
      }
      return grads;
    });
  }
  return out;
}

std::vector<Tensor> split(const Tensor& a, const std::vector<int64_t>& sizes, int64_t dim) {
  check_defined(a, "split");
  CP_CHECK(a.dim() >= 1, "split", "needs at least 1 dim, got ", a.describe());
  const int64_t d = wrap_dim(dim, a.dim(), "split", a);
  int64_t total = 0;
  for (int64_t s : sizes) {
    CP_CHECK(s >= 0, "split", "negative piece size in ", sizes);
    total += s;
  }
  CP_CHECK(total == a.shape()[d], "split", "sizes ", sizes, " add up to ", total, " but dim ", dim, " of ", a.describe(),
           " has size ", a.shape()[d]);
  std::vector<Tensor> pieces;
  int64_t start = 0;
  for (int64_t s : sizes) {
    pieces.push_back(narrow(a, d, start, s));
    start += s;
  }
  return pieces;
}

Tensor broadcast_to(const Tensor& a, const Shape& shape) {
  check_defined(a, "broadcast_to");
  const int64_t rank = (int64_t)shape.size(), lead = rank - a.dim();
  CP_CHECK(lead >= 0, "broadcast_to", "cannot broadcast ", a.describe(), " to fewer dims ", shape);
  Shape strides(rank, 0);
  for (int64_t i = 0; i < rank; ++i) {
    CP_CHECK(shape[i] >= 0, "broadcast_to", "negative size in target shape ", shape);
    if (i < lead) continue;
    const int64_t have = a.shape()[i - lead];
    CP_CHECK(have == shape[i] || have == 1, "broadcast_to", "cannot broadcast ", a.describe(), " to ", shape, ": dim ", i - lead,
             " has size ", have, " (needs 1 or ", shape[i], ")");
    strides[i] = have == shape[i] ? a.strides()[i - lead] : 0;
  }
  Tensor out = gather(a, shape, strides, 0);
  if (autograd::needs_record({&a})) {
    Shape from = a.shape();
    autograd::record("broadcast_to", {a}, out, [from](const Tensor& g, const std::vector<bool>&) {
      return std::vector<Tensor>{sum_to(g, from)};
    });
  }
  return out;
}

Tensor unsqueeze(const Tensor& a, int64_t dim) {
  check_defined(a, "unsqueeze");
  const int64_t d = wrap_dim(dim, a.dim() + 1, "unsqueeze", a);
  Shape ns = a.shape();
  ns.insert(ns.begin() + d, 1);
  return a.reshape(ns);
}

Tensor squeeze(const Tensor& a, int64_t dim) {
  check_defined(a, "squeeze");
  const int64_t d = wrap_dim(dim, a.dim(), "squeeze", a);
  CP_CHECK(a.shape()[d] == 1, "squeeze", "dim ", dim, " of ", a.describe(), " has size ", a.shape()[d], ", not 1");
  Shape ns = a.shape();
  ns.erase(ns.begin() + d);
  return a.reshape(ns);
}

}  // namespace cpoison
