#include "engine/ops/reduce.h"

#include <algorithm>

#include "engine/autograd.h"
#include "engine/backend/dispatch.h"
#include "engine/backend/reduce.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/index.h"

namespace cpoison {

namespace {
std::vector<bool> dim_mask(const Tensor& a, const std::vector<int64_t>& dims, const char* op) {
  std::vector<bool> m(a.dim(), false);
  for (int64_t d : dims) {
    int64_t i = d < 0 ? d + a.dim() : d;
    CP_CHECK(i >= 0 && i < a.dim(), op, "dim ", d, " out of range for ", a.describe());
    CP_CHECK(!m[i], op, "dim ", d, " given twice");
    m[i] = true;
  }
  return m;
}

// A copy of a laid out as [kept elements, reduced elements] (reduced dims moved last).
Tensor as_rows(const Tensor& a, const std::vector<bool>& mask, int64_t& rows, int64_t& cols) {
  Shape sh, st;
  rows = 1;
  cols = 1;
  for (int64_t i = 0; i < a.dim(); ++i)
    if (!mask[i]) { sh.push_back(a.shape()[i]); st.push_back(a.strides()[i]); rows *= a.shape()[i]; }
  for (int64_t i = 0; i < a.dim(); ++i)
    if (mask[i]) { sh.push_back(a.shape()[i]); st.push_back(a.strides()[i]); cols *= a.shape()[i]; }
  Tensor v = make_view(a.detach(), sh, st, a.offset());
  return v.contiguous().reshape({rows, cols});
}

Shape reduced_shape(const Shape& s, const std::vector<bool>& mask, bool keepdim) {
  Shape out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (!mask[i]) out.push_back(s[i]);
    else if (keepdim) out.push_back(1);
  }
  return out;
}

// g (reduced shape, kept dims as 1) broadcast back to `shape`, contiguous.
Tensor expand_back(const Tensor& g, const Shape& shape, const std::vector<bool>& mask) {
  Tensor gk = g.reshape(reduced_shape(shape, mask, true));
  Shape st(shape.size(), 0);
  Shape cs = contiguous_strides(gk.shape());
  for (size_t i = 0; i < shape.size(); ++i) st[i] = mask[i] ? 0 : cs[i];
  Tensor out = Tensor::empty(shape, g.dtype(), g.device());
  out.copy_(make_view(gk.contiguous(), shape, st, gk.contiguous().offset()));
  return out;
}
}  // namespace

Tensor sum(const Tensor& a, const std::vector<int64_t>& dims, bool keepdim) {
  CP_CHECK(a.defined() && is_floating(a.dtype()), "sum", "needs a float tensor, got ", a.describe());
  std::vector<bool> mask = dim_mask(a, dims, "sum");
  int64_t rows, cols;
  Tensor r = CP_BACKEND(a.device(), sum_rows)(as_rows(a, mask, rows, cols));
  Tensor out = r.reshape(reduced_shape(a.shape(), mask, keepdim)).detach();
  if (autograd::needs_record({&a})) {
    Shape shape = a.shape();
    autograd::record("sum", {a}, out, [shape, mask](const Tensor& g, const std::vector<bool>&) {
      return std::vector<Tensor>{expand_back(g, shape, mask)};
    });
  }
  return out;
}

Tensor sum(const Tensor& a) {
  std::vector<int64_t> all(a.dim());
  for (int64_t i = 0; i < a.dim(); ++i) all[i] = i;
  return sum(a, all, false);
}

Tensor mean(const Tensor& a, const std::vector<int64_t>& dims, bool keepdim) {
  std::vector<bool> mask = dim_mask(a, dims, "mean");
  int64_t n = 1;
  for (int64_t i = 0; i < a.dim(); ++i)
    if (mask[i]) n *= a.shape()[i];
  CP_CHECK(n > 0, "mean", "mean over an empty set of elements of ", a.describe());
  return mul_scalar(sum(a, dims, keepdim), 1.0 / (double)n);
}

Tensor mean(const Tensor& a) {
  CP_CHECK(a.numel() > 0, "mean", "mean of an empty tensor ", a.describe());
  return mul_scalar(sum(a), 1.0 / (double)a.numel());
}

Tensor var(const Tensor& a, const std::vector<int64_t>& dims, bool unbiased, bool keepdim) {
  std::vector<bool> mask = dim_mask(a, dims, "var");
  int64_t n = 1;
  for (int64_t i = 0; i < a.dim(); ++i)
    if (mask[i]) n *= a.shape()[i];
  CP_CHECK(n > (unbiased ? 1 : 0), "var", "too few elements (", n, ") for a variance of ", a.describe());
  Tensor centred = sub(a, mean(a, dims, true));
  return mul_scalar(sum(square(centred), dims, keepdim), 1.0 / (double)(unbiased ? n - 1 : n));
}

Tensor sum_to(const Tensor& a, const Shape& shape) {
  if (a.shape() == shape) return a;
  CP_CHECK(shape.size() <= a.shape().size(), "sum_to", "cannot sum ", a.describe(), " to ", shape);
  size_t lead = a.shape().size() - shape.size();
  std::vector<int64_t> dims;
  for (size_t i = 0; i < a.shape().size(); ++i) {
    if (i < lead) { dims.push_back((int64_t)i); continue; }
    int64_t want = shape[i - lead];
    if (want == 1 && a.shape()[i] != 1) dims.push_back((int64_t)i);
    else CP_CHECK(want == a.shape()[i], "sum_to", "cannot sum ", a.describe(), " to ", shape);
  }
  return sum(a, dims, false).reshape(shape);
}

Tensor argmax(const Tensor& a, int64_t dim) {
  CP_CHECK(a.defined() && is_floating(a.dtype()), "argmax", "needs a float tensor, got ", a.describe());
  std::vector<bool> mask = dim_mask(a, {dim}, "argmax");
  int64_t rows, cols;
  Tensor r = CP_BACKEND(a.device(), argmax_rows)(as_rows(a, mask, rows, cols));
  return r.reshape(reduced_shape(a.shape(), mask, false));
}

Tensor max(const Tensor& a, int64_t dim, bool keepdim) {
  std::vector<bool> mask = dim_mask(a, {dim}, "max");
  int64_t rows, cols;
  Tensor x = as_rows(a, mask, rows, cols);  // detached [rows, cols]
  Tensor idx = CP_BACKEND(a.device(), argmax_rows)(x);
  Tensor flat = add(mul_scalar(Tensor::arange(rows, DType::i64, a.device()).to(a.dtype()), (double)cols), idx.to(a.dtype()))
                    .to(DType::i64);
  Tensor out = index_select0(x.reshape({rows * cols, 1}), flat).reshape(reduced_shape(a.shape(), mask, keepdim)).detach();
  if (autograd::needs_record({&a})) {
    Shape shape = a.shape();
    int64_t d = dim < 0 ? dim + a.dim() : dim;
    autograd::record("max", {a}, out, [shape, mask, flat, rows, cols, d](const Tensor& g, const std::vector<bool>&) {
      Tensor grows = index_add0(Tensor::zeros({rows * cols, 1}, g.dtype(), g.device()), flat, g.reshape({rows, 1}))
                         .reshape({rows, cols});
      // grows is laid out [kept..., reduced]; move the reduced dim back into place.
      Shape kept;
      for (size_t i = 0; i < shape.size(); ++i)
        if (!mask[i]) kept.push_back(shape[i]);
      kept.push_back(shape[d]);
      Tensor t = grows.reshape(kept);
      std::vector<int64_t> perm;
      int64_t k = 0;
      for (int64_t i = 0; i < (int64_t)shape.size(); ++i) perm.push_back(i == d ? (int64_t)shape.size() - 1 : k++);
      Shape st(shape.size());
      Shape cs = contiguous_strides(kept);
      for (size_t i = 0; i < shape.size(); ++i) st[i] = cs[perm[i]];
      return std::vector<Tensor>{make_view(t, shape, st, t.offset()).contiguous()};
    });
  }
  return out;
}

}  // namespace cpoison
