// Neural-network ops: checks, dispatch to the backend kernels (engine/backend/nn.h) and the
// autograd nodes. Layout letters: N batch, C channels, H rows, W columns (images NCHW).
// Backward functions compute only the gradients asked for (need[i]) and keep only the saved
// tensors those gradients use: a conv with a frozen weight keeps no copy of its input.
#include "engine/ops/nn.h"

#include "engine/autograd.h"
#include "engine/backend/dispatch.h"
#include "engine/backend/nn.h"
#include "engine/distributed/ops.h"  // issue #15: SyncBN
#include "engine/ops/reduce.h"

namespace cpoison {

namespace {

// Inputs to the kernels: outside autograd, contiguous (undefined stays undefined).
Tensor plain(const Tensor& t) { return t.defined() ? t.detach().contiguous() : Tensor(); }

// Every defined tensor is a float tensor of x's dtype on x's device.
void check_same_kind(const char* op, const Tensor& x, std::initializer_list<std::pair<const char*, const Tensor*>> others) {
  CP_CHECK(x.defined(), op, "undefined input");
  CP_CHECK(is_floating(x.dtype()), op, "needs a float input, got ", x.describe());
  for (const auto& [name, t] : others) {
    if (!t->defined()) continue;
    CP_CHECK(t->device() == x.device(), op, name, " ", t->describe(), " is on another device than the input ", x.describe());
    CP_CHECK(t->dtype() == x.dtype(), op, name, " ", t->describe(), " has another dtype than the input ", x.describe());
  }
}

void check_channel_vector(const char* op, const char* name, const Tensor& t, int64_t channels, const Tensor& x) {
  if (!t.defined()) return;
  CP_CHECK(t.shape() == Shape{channels}, op, name, " must be [", channels, "] for input ", x.shape(), ", got ", t.shape());
}

// Output size of a window op along one dimension; an Error when nothing fits.
int64_t out_size(const char* op, int64_t in, int64_t kernel, int64_t stride, int64_t padding, const Shape& x_shape) {
  int64_t span = in + 2 * padding - kernel;
  CP_CHECK(span >= 0, op, "kernel ", kernel, " larger than the padded input (", in, " + 2*", padding, ") of input ", x_shape);
  return span / stride + 1;
}

void check_pool_args(const char* op, const Tensor& x, int64_t kernel, int64_t stride, int64_t padding) {
  check_same_kind(op, x, {});
  CP_CHECK(x.dim() == 4, op, "input must be [N, C, H, W], got ", x.shape());
  CP_CHECK(kernel >= 1 && stride >= 1, op, "kernel and stride must be >= 1, got kernel ", kernel, " stride ", stride);
  CP_CHECK(padding >= 0 && 2 * padding <= kernel, op, "padding must be in [0, kernel/2], got padding ", padding,
           " for kernel ", kernel);
  out_size(op, x.size(2), kernel, stride, padding, x.shape());
  out_size(op, x.size(3), kernel, stride, padding, x.shape());
}

}  // namespace

// ---------------------------------------------------------------- conv2d

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dOptions& opt) {
  const char* op = "conv2d";
  CP_CHECK(weight.defined(), op, "undefined weight");
  check_same_kind(op, x, {{"weight", &weight}, {"bias", &bias}});
  CP_CHECK(x.dim() == 4, op, "input must be [N, C, H, W], got ", x.shape());
  CP_CHECK(weight.dim() == 4, op, "weight must be [Cout, Cin/groups, KH, KW], got ", weight.shape());
  CP_CHECK(opt.stride >= 1 && opt.padding >= 0 && opt.groups >= 1, op, "needs stride >= 1, padding >= 0, groups >= 1, got stride ",
           opt.stride, " padding ", opt.padding, " groups ", opt.groups);
  const int64_t C = x.size(1), Cout = weight.size(0), groups = opt.groups;
  CP_CHECK(C % groups == 0 && Cout % groups == 0, op, "groups ", groups, " must divide the input channels of ", x.shape(),
           " and the output channels of weight ", weight.shape());
  CP_CHECK(weight.size(1) * groups == C, op, "input ", x.shape(), " has ", C, " channels but weight ", weight.shape(),
           " with groups ", groups, " expects ", weight.size(1) * groups);
  check_channel_vector(op, "bias", bias, Cout, x);
  out_size(op, x.size(2), weight.size(2), opt.stride, opt.padding, x.shape());
  out_size(op, x.size(3), weight.size(3), opt.stride, opt.padding, x.shape());

  Tensor xc = plain(x), wc = plain(weight);
  Tensor y = CP_BACKEND(x.device(), conv2d_forward)(xc, wc, plain(bias), opt.stride, opt.padding, groups);
  if (autograd::needs_record({&x, &weight, &bias})) {
    // The input gradient needs the weight; the weight gradient needs the input.
    Tensor saved_x = weight.requires_grad() ? xc : Tensor();
    Tensor saved_w = x.requires_grad() ? wc : Tensor();
    const int64_t H = x.size(2), W = x.size(3), KH = weight.size(2), KW = weight.size(3);
    const int64_t stride = opt.stride, padding = opt.padding;
    autograd::record(op, {x, weight, bias}, y,
                     [saved_x, saved_w, H, W, KH, KW, stride, padding, groups, Cout](const Tensor& grad, const std::vector<bool>& need) {
                       Tensor g = grad.contiguous();
                       std::vector<Tensor> out(3);
                       if (need[0])
                         out[0] = CP_BACKEND(g.device(), conv2d_backward_input)(g, saved_w, H, W, stride, padding, groups);
                       if (need[1])
                         out[1] = CP_BACKEND(g.device(), conv2d_backward_weight)(g, saved_x, KH, KW, stride, padding, groups);
                       if (need[2]) out[2] = CP_BACKEND(g.device(), channel_sum)(g, Cout, g.size(2) * g.size(3));
                       return out;
                     });
  }
  return y;
}

// ---------------------------------------------------------------- linear, matmul

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  const char* op = "linear";
  CP_CHECK(weight.defined(), op, "undefined weight");
  check_same_kind(op, x, {{"weight", &weight}, {"bias", &bias}});
  CP_CHECK(weight.dim() == 2, op, "weight must be [out, in], got ", weight.shape());
  CP_CHECK(x.dim() >= 1 && x.size(-1) == weight.size(1), op, "input ", x.shape(), " does not end in the ", weight.size(1),
           " input features of weight ", weight.shape());
  const int64_t in = weight.size(1), out_features = weight.size(0);
  check_channel_vector(op, "bias", bias, out_features, x);

  const Shape x_shape = x.shape();
  Shape y_shape = x_shape;
  y_shape.back() = out_features;
  const int64_t rows = x.numel() / std::max<int64_t>(in, 1);
  Tensor x2 = plain(x).reshape({rows, in}), wc = plain(weight);
  Tensor y = CP_BACKEND(x.device(), matmul)(x2, wc, false, true);
  if (bias.defined()) y = CP_BACKEND(x.device(), add_channel_bias)(y, plain(bias), 1);
  y = y.reshape(y_shape);
  if (autograd::needs_record({&x, &weight, &bias})) {
    Tensor saved_x = weight.requires_grad() ? x2 : Tensor();
    Tensor saved_w = x.requires_grad() ? wc : Tensor();
    autograd::record(op, {x, weight, bias}, y,
                     [saved_x, saved_w, x_shape, rows, out_features](const Tensor& grad, const std::vector<bool>& need) {
                       Tensor g = grad.contiguous().reshape({rows, out_features});
                       std::vector<Tensor> out(3);
                       if (need[0]) out[0] = CP_BACKEND(g.device(), matmul)(g, saved_w, false, false).reshape(x_shape);
                       if (need[1]) out[1] = CP_BACKEND(g.device(), matmul)(g, saved_x, true, false);
                       if (need[2]) out[2] = CP_BACKEND(g.device(), channel_sum)(g, out_features, 1);
                       return out;
                     });
  }
  return y;
}

Tensor matmul(const Tensor& a, const Tensor& b) {
  const char* op = "matmul";
  CP_CHECK(b.defined(), op, "undefined operand");
  check_same_kind(op, a, {{"right operand", &b}});
  CP_CHECK((a.dim() == 2 || a.dim() == 3) && (b.dim() == 2 || b.dim() == 3), op, "operands must be 2-d or 3-d, got ",
           a.shape(), " and ", b.shape());
  CP_CHECK(a.size(-1) == b.size(-2), op, "inner dimensions differ: ", a.shape(), " x ", b.shape());
  CP_CHECK(a.dim() == 2 || b.dim() == 2 || a.size(0) == b.size(0), op, "batch sizes differ: ", a.shape(), " x ", b.shape());
  Tensor ac = plain(a), bc = plain(b);
  Tensor y = CP_BACKEND(a.device(), matmul)(ac, bc, false, false);
  if (autograd::needs_record({&a, &b})) {
    Tensor saved_a = b.requires_grad() ? ac : Tensor();
    Tensor saved_b = a.requires_grad() ? bc : Tensor();
    const bool a3 = a.dim() == 3, b3 = b.dim() == 3;
    autograd::record(op, {a, b}, y, [saved_a, saved_b, a3, b3](const Tensor& grad, const std::vector<bool>& need) {
      Tensor g = grad.contiguous();
      std::vector<Tensor> out(2);
      if (need[0]) {
        // dA = G · Bᵀ; a 2-d A shared across a batch sums the batch's contributions.
        out[0] = CP_BACKEND(g.device(), matmul)(g, saved_b, false, true);
        if (!a3 && b3) out[0] = sum(out[0], {0});
      }
      if (need[1]) {
        // dB = Aᵀ · G; a 2-d B shared across a batch is one GEMM over the stacked rows.
        if (a3 && !b3) {
          const int64_t rows = saved_a.size(0) * saved_a.size(1);
          out[1] = CP_BACKEND(g.device(), matmul)(saved_a.reshape({rows, saved_a.size(2)}), g.reshape({rows, g.size(2)}), true, false);
        } else {
          out[1] = CP_BACKEND(g.device(), matmul)(saved_a, g, true, false);
        }
      }
      return out;
    });
  }
  return y;
}

// ---------------------------------------------------------------- batch norm

Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                  const Tensor& running_var, bool training, double momentum, double eps) {
  const char* op = "batch_norm";
  check_same_kind(op, x, {{"weight", &weight}, {"bias", &bias}, {"running_mean", &running_mean}, {"running_var", &running_var}});
  CP_CHECK(x.dim() == 2 || x.dim() == 4, op, "input must be [N, C] or [N, C, H, W], got ", x.shape());
  const int64_t C = x.size(1);
  check_channel_vector(op, "weight", weight, C, x);
  check_channel_vector(op, "bias", bias, C, x);
  check_channel_vector(op, "running_mean", running_mean, C, x);
  check_channel_vector(op, "running_var", running_var, C, x);
  CP_CHECK(running_mean.defined() == running_var.defined(), op, "running_mean and running_var must be both defined or both undefined");
  CP_CHECK(eps > 0, op, "eps must be positive, got ", eps);
  const int64_t per_channel = x.numel() / std::max<int64_t>(C, 1);
  if (training && distributed::data_parallel())  // issue #15: statistics of the ranks' global batch
    return distributed::sync_batch_norm(x, weight, bias, running_mean, running_var, momentum, eps);
  Tensor xc = plain(x), wc = plain(weight), bc = plain(bias);

  if (training) {
    CP_CHECK(per_channel > 1, op, "training needs more than one value per channel, got input ", x.shape());
    // The kernel updates contiguous running statistics in place; others are updated through a copy.
    Tensor rm = plain(running_mean), rv = plain(running_var);
    std::vector<Tensor> r = CP_BACKEND(x.device(), batch_norm_train)(xc, wc, bc, rm, rv, momentum, eps);
    if (rm.defined() && rm.storage() != running_mean.storage()) Tensor(running_mean).copy_(rm);  // a handle: same data
    if (rv.defined() && rv.storage() != running_var.storage()) Tensor(running_var).copy_(rv);
    Tensor y = r[0];
    if (autograd::needs_record({&x, &weight, &bias})) {
      Tensor save_mean = r[1], save_invstd = r[2];
      autograd::record(op, {x, weight, bias}, y, [xc, wc, save_mean, save_invstd](const Tensor& grad, const std::vector<bool>& need) {
        return CP_BACKEND(grad.device(), batch_norm_backward_train)(grad.contiguous(), xc, wc, save_mean, save_invstd, need[0],
                                                                    need[1], need[2]);
      });
    }
    return y;
  }

  CP_CHECK(running_mean.defined(), op, "eval mode needs running_mean and running_var, for input ", x.shape());
  Tensor rm = plain(running_mean), rv = plain(running_var);
  Tensor y = CP_BACKEND(x.device(), batch_norm_eval)(xc, wc, bc, rm, rv, eps);
  if (autograd::needs_record({&x, &weight, &bias})) {
    // Copies: a later training step updates the running statistics in place.
    Tensor saved_rm = rm.clone(), saved_rv = rv.clone();
    Tensor saved_x = weight.defined() && weight.requires_grad() ? xc : Tensor();
    autograd::record(op, {x, weight, bias}, y, [saved_x, wc, saved_rm, saved_rv, eps](const Tensor& grad, const std::vector<bool>& need) {
      // dx needs only g; dweight needs x; dbias needs only g (x's place may stay undefined then).
      Tensor g = grad.contiguous();
      Tensor x_for_sums = saved_x.defined() ? saved_x : g;
      return CP_BACKEND(g.device(), batch_norm_backward_eval)(g, x_for_sums, wc, saved_rm, saved_rv, eps, need[0], need[1], need[2]);
    });
  }
  return y;
}

// ---------------------------------------------------------------- pooling

Tensor max_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding) {
  check_pool_args("max_pool2d", x, kernel, stride, padding);
  Tensor xc = plain(x);
  Tensor y = CP_BACKEND(x.device(), max_pool2d_forward)(xc, kernel, stride, padding);
  if (autograd::needs_record({&x})) {
    autograd::record("max_pool2d", {x}, y, [xc, kernel, stride, padding](const Tensor& grad, const std::vector<bool>&) {
      return std::vector<Tensor>{CP_BACKEND(grad.device(), max_pool2d_backward)(grad.contiguous(), xc, kernel, stride, padding)};
    });
  }
  return y;
}

Tensor avg_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t padding) {
  check_pool_args("avg_pool2d", x, kernel, stride, padding);
  Tensor y = CP_BACKEND(x.device(), avg_pool2d_forward)(plain(x), kernel, stride, padding);
  if (autograd::needs_record({&x})) {
    const int64_t H = x.size(2), W = x.size(3);
    autograd::record("avg_pool2d", {x}, y, [H, W, kernel, stride, padding](const Tensor& grad, const std::vector<bool>&) {
      return std::vector<Tensor>{CP_BACKEND(grad.device(), avg_pool2d_backward)(grad.contiguous(), H, W, kernel, stride, padding)};
    });
  }
  return y;
}

Tensor global_avg_pool2d(const Tensor& x) {
  check_same_kind("global_avg_pool2d", x, {});
  CP_CHECK(x.dim() == 4, "global_avg_pool2d", "input must be [N, C, H, W], got ", x.shape());
  CP_CHECK(x.size(2) * x.size(3) > 0, "global_avg_pool2d", "input has an empty image: ", x.shape());
  Tensor y = CP_BACKEND(x.device(), global_avg_pool2d_forward)(plain(x));
  if (autograd::needs_record({&x})) {
    const int64_t H = x.size(2), W = x.size(3);
    autograd::record("global_avg_pool2d", {x}, y, [H, W](const Tensor& grad, const std::vector<bool>&) {
      return std::vector<Tensor>{CP_BACKEND(grad.device(), global_avg_pool2d_backward)(grad.contiguous(), H, W)};
    });
  }
  return y;
}

}  // namespace cpoison
