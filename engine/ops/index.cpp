#include "engine/ops/index.h"

#include "engine/autograd.h"
#include "engine/backend/dispatch.h"
#include "engine/backend/index.h"

namespace cpoison {

namespace {
void check_index(const Tensor& a, const Tensor& index, const char* op) {
  CP_CHECK(a.defined() && index.defined(), op, "undefined operand");
  CP_CHECK(a.dim() >= 1, op, "needs at least 1 dim, got ", a.describe());
  CP_CHECK(index.dtype() == DType::i64 && index.dim() == 1, op, "index must be i64 [M], got ", index.describe());
  CP_CHECK(index.device() == a.device(), op, "index on ", index.device(), " but tensor on ", a.device());
}
Shape with_rows(const Shape& s, int64_t rows) {
  Shape out = s;
  out[0] = rows;
  return out;
}
}  // namespace

Tensor index_select0(const Tensor& a, const Tensor& index) {
  check_index(a, index, "index_select0");
  Tensor ac = a.detach().contiguous();
  Tensor out = CP_BACKEND(a.device(), index_select_rows)(ac.reshape({a.size(0), -1}), index.contiguous())
                   .reshape(with_rows(a.shape(), index.numel()));
  if (autograd::needs_record({&a})) {
    Shape shape = a.shape();
    autograd::record("index_select0", {a}, out, [shape, index](const Tensor& g, const std::vector<bool>&) {
      Tensor zeros = Tensor::zeros({shape[0], shape_numel(shape) / std::max<int64_t>(shape[0], 1)}, g.dtype(), g.device());
      Tensor gi = CP_BACKEND(g.device(), index_add_rows)(zeros, index.contiguous(), g.contiguous().reshape({index.numel(), -1}));
      return std::vector<Tensor>{gi.reshape(shape)};
    });
  }
  return out;
}

Tensor index_add0(const Tensor& a, const Tensor& index, const Tensor& src) {
  check_index(a, index, "index_add0");
  CP_CHECK(is_floating(a.dtype()) && src.dtype() == a.dtype(), "index_add0", "needs float tensors of one dtype: ", a.describe(), ", ", src.describe());
  CP_CHECK(src.shape() == with_rows(a.shape(), index.numel()), "index_add0", "src ", src.describe(), " does not match ", index.numel(), " rows of ", a.describe());
  Tensor out = CP_BACKEND(a.device(), index_add_rows)(a.detach().contiguous().reshape({a.size(0), -1}), index.contiguous(),
                                                      src.detach().contiguous().reshape({index.numel(), -1}))
                   .reshape(a.shape());
  if (autograd::needs_record({&a, &src})) {
    autograd::record("index_add0", {a, src}, out, [index](const Tensor& g, const std::vector<bool>& need) {
      std::vector<Tensor> gi(2);
      if (need[0]) gi[0] = g;
      if (need[1]) gi[1] = index_select0(g, index);
      return gi;
    });
  }
  return out;
}

Tensor index_copy0(const Tensor& a, const Tensor& index, const Tensor& src) {
  check_index(a, index, "index_copy0");
  CP_CHECK(src.defined() && src.dtype() == a.dtype() && src.device() == a.device(), "index_copy0",
           "needs tensors of one dtype on one device: ", a.describe(), ", ", src.describe());
  CP_CHECK(src.shape() == with_rows(a.shape(), index.numel()), "index_copy0", "src ", src.describe(), " does not match ", index.numel(), " rows of ", a.describe());
  Tensor out = CP_BACKEND(a.device(), index_copy_rows)(a.detach().contiguous().reshape({a.size(0), -1}), index.contiguous(),
                                                       src.detach().contiguous().reshape({index.numel(), -1}))
                   .reshape(a.shape());
  if (autograd::needs_record({&a, &src})) {
    autograd::record("index_copy0", {a, src}, out, [index](const Tensor& g, const std::vector<bool>& need) {
      std::vector<Tensor> gi(2);
      if (need[0]) {  // the replaced rows do not reach the output
        Tensor g2 = g.contiguous().reshape({g.size(0), -1});
        Tensor zeros = Tensor::zeros({index.numel(), g2.size(1)}, g.dtype(), g.device());
        gi[0] = CP_BACKEND(g.device(), index_copy_rows)(g2, index.contiguous(), zeros).reshape(g.shape());
      }
      if (need[1]) gi[1] = index_select0(g, index);
      return gi;
    });
  }
  return out;
}

Tensor gather1(const Tensor& a, const Tensor& index) {
  check_index(a, index, "gather1");
  CP_CHECK(a.dim() == 2 && index.numel() == a.size(0), "gather1", "needs a [N, K] and index [N], got ", a.describe(), " and ", index.describe());
  CP_CHECK(is_floating(a.dtype()), "gather1", "needs a float tensor, got ", a.describe());
  Tensor out = CP_BACKEND(a.device(), gather_cols)(a.detach().contiguous(), index.contiguous());
  if (autograd::needs_record({&a})) {
    int64_t K = a.size(1);
    autograd::record("gather1", {a}, out, [index, K](const Tensor& g, const std::vector<bool>&) {
      return std::vector<Tensor>{CP_BACKEND(g.device(), scatter_cols)(g.contiguous(), index.contiguous(), K)};
    });
  }
  return out;
}

}  // namespace cpoison
