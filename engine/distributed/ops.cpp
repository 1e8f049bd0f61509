// Differentiable collectives (ops.h). The engine's ops record their own nodes; the two
// collectives here record theirs with autograd::record, like any op in engine/ops.
#include "engine/distributed/ops.h"

#include <cstring>

#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/ops/ops.h"

namespace cpoison::distributed {
namespace {

// Where x's collective runs: on its GPU through NCCL when every rank has one (nccl_active()),
// otherwise on the host (a CUDA tensor is copied there and back).
Device collective_device(const Tensor& x) {
  return x.device() == Device::cuda && nccl_active() ? Device::cuda : Device::cpu;
}

// x on `device`, contiguous, as its own storage (the collective writes into it).
Tensor own_copy(const Tensor& x, Device device) {
  Tensor h = x.detach().to(device).contiguous();
  if (h.storage() == x.storage()) h = h.clone();
  return h;
}

void reduce_in_place(Tensor& t, Traffic kind) {
  const bool gpu = t.device() == Device::cuda;
  if (t.dtype() == DType::f32)
    gpu ? nccl_all_reduce_sum(t.data<float>(), (size_t)t.numel(), kind) : all_reduce_sum(t.data<float>(), (size_t)t.numel(), kind);
  else if (t.dtype() == DType::f64)
    gpu ? nccl_all_reduce_sum(t.data<double>(), (size_t)t.numel(), kind) : all_reduce_sum(t.data<double>(), (size_t)t.numel(), kind);
  else
    fail("all_reduce_sum", "float tensors only, got ", t.describe());
}

Tensor reduced(const Tensor& x, Traffic kind) {
  Tensor t = own_copy(x, collective_device(x));
  reduce_in_place(t, kind);
  return t.to(x.device());
}

}  // namespace

Tensor all_reduce_sum(const Tensor& x, Traffic kind) {
  CP_CHECK(x.defined(), "all_reduce_sum", "undefined input");
  if (size() == 1) return x;
  Tensor y;
  {
    autograd::NoGradGuard no_grad;
    y = reduced(x, kind);
  }
  if (autograd::needs_record({&x})) {
    autograd::record("all_reduce_sum", {x}, y, [kind](const Tensor& g, const std::vector<bool>&) {
      return std::vector<Tensor>{reduced(g, kind)};
    });
  }
  return y;
}

Tensor all_gather_rows(const Tensor& x, Traffic kind) {
  const char* op = "all_gather_rows";
  CP_CHECK(x.defined() && x.dim() >= 1, op, "input must have a row dimension, got ",
           x.defined() ? x.describe() : std::string("undefined"));
  if (size() == 1) return x;
  const int64_t b = x.size(0);
  std::vector<int64_t> rows = all_gather(b, kind);
  for (int r = 0; r < size(); ++r)
    CP_CHECK(rows[r] == b, op, "every rank must give the same number of rows; rank ", r, " has ", rows[r],
             ", rank ", rank(), " has ", b);
  Shape shape = x.shape();
  shape[0] = b * size();
  Tensor y;
  {
    autograd::NoGradGuard no_grad;
    const Device dev = collective_device(x);
    Tensor h = x.detach().to(dev).contiguous();
    Tensor out = Tensor::empty(shape, h.dtype(), dev);
    const size_t bytes = (size_t)h.numel() * dtype_size(h.dtype());
    if (dev == Device::cuda)
      nccl_all_gather(h.raw_data(), bytes, out.raw_data(), kind);
    else
      all_gather(h.raw_data(), bytes, out.raw_data(), kind);
    y = out.to(x.device());
  }
  if (autograd::needs_record({&x})) {
    const int64_t begin = rank() * b;
    autograd::record(op, {x}, y, [begin, b, kind](const Tensor& g, const std::vector<bool>&) {
      Tensor summed = reduced(g, kind);
      return std::vector<Tensor>{summed.slice0(begin, begin + b).contiguous()};
    });
  }
  return y;
}

Tensor local_rows(const Tensor& x, const char* where) {
  CP_CHECK(x.defined() && x.dim() >= 1, where, "input must have a row dimension");
  if (size() == 1) return x;
  Slice s = local_slice(x.size(0), where);
  return x.slice0(s.begin, s.end);
}

Tensor sync_batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                       const Tensor& running_var, double momentum, double eps) {
  const char* op = "sync_batch_norm";
  CP_CHECK(x.dim() == 2 || x.dim() == 4, op, "input must be [N, C] or [N, C, H, W], got ", x.shape());
  CP_CHECK(is_floating(x.dtype()), op, "float input only, got ", x.describe());
  const int64_t C = x.size(1);
  const std::vector<int64_t> dims = x.dim() == 4 ? std::vector<int64_t>{0, 2, 3} : std::vector<int64_t>{0};
  const Shape channel_shape = x.dim() == 4 ? Shape{1, C, 1, 1} : Shape{1, C};
  const double n = all_reduce_sum((double)(x.numel() / std::max<int64_t>(C, 1)), Traffic::batch_norm);  // values per channel, all ranks
  CP_CHECK(n > 1, op, "training needs more than one value per channel in the global batch, got input ", x.shape(),
           " on each of ", size(), " ranks");
  // As the one-process kernel: statistics in double, two passes (the centred sum of squares
  // does not cancel), then y = x * scale + shift with scale and shift rounded to x's dtype.
  const DType dt = x.dtype();
  Tensor xd = x.to(DType::f64);
  Tensor mean = mul_scalar(all_reduce_sum(sum(xd, dims, true), Traffic::batch_norm), 1.0 / n);
  Tensor var = mul_scalar(all_reduce_sum(sum(square(sub(xd, mean)), dims, true), Traffic::batch_norm), 1.0 / n);
  Tensor scale = rdiv_scalar(sqrt(add_scalar(var, eps)), 1.0);  // invstd
  if (weight.defined()) scale = mul(scale, weight.to(DType::f64).reshape(channel_shape));
  Tensor shift = neg(mul(mean, scale));
  if (bias.defined()) shift = add(shift, bias.to(DType::f64).reshape(channel_shape));
  Tensor y = add(mul(x, scale.to(dt)), shift.to(dt));
  if (running_mean.defined()) {
    autograd::NoGradGuard no_grad;
    Tensor m = mean.detach().reshape({C});
    Tensor v = mul_scalar(var.detach().reshape({C}), n / (n - 1));
    auto update = [momentum](const Tensor& running, const Tensor& batch) {
      Tensor r = add(mul_scalar(running.to(DType::f64), 1 - momentum), mul_scalar(batch, momentum));
      Tensor(running).copy_(r.to(running.dtype()));
    };
    update(running_mean, m);
    update(running_var, v);
  }
  return y;
}

void all_reduce_gradients(const std::vector<Tensor>& params, bool average) {
  if (size() == 1) return;
  // Which parameters have a gradient on some rank: those keep (or get) one; the others stay
  // without, as in a one-process step (SGD skips them).
  std::vector<double> has(params.size());
  for (size_t i = 0; i < params.size(); ++i) has[i] = params[i].grad().defined() ? 1 : 0;
  all_reduce_sum(has.data(), has.size(), Traffic::gradients);
  const double scale = average ? 1.0 / size() : 1.0;
  for (DType dt : {DType::f32, DType::f64}) {
    int64_t total = 0;
    for (size_t i = 0; i < params.size(); ++i)
      if (params[i].dtype() == dt && has[i] > 0) total += params[i].numel();
    if (total == 0) continue;
    // The flat buffer lives where the collective runs: on the GPU with NCCL (the parameters are
    // CUDA tensors), else on the host.
    Device dev = Device::cpu;
    for (size_t i = 0; i < params.size(); ++i)
      if (params[i].dtype() == dt && has[i] > 0) {
        dev = collective_device(params[i]);
        break;
      }
    Tensor flat = Tensor::zeros({total}, dt, dev);
    const size_t es = dtype_size(dt);
    auto* base = static_cast<char*>(flat.raw_data());
    int64_t at = 0;
    for (size_t i = 0; i < params.size(); ++i) {
      const Tensor& p = params[i];
      if (p.dtype() != dt || has[i] == 0) continue;
      Tensor g = p.grad();
      if (g.defined() && dev == Device::cuda) {
        flat.slice0(at, at + p.numel()).copy_(g.detach().reshape({-1}));
      } else if (g.defined()) {
        Tensor h = g.detach().to(Device::cpu).contiguous();
        std::memcpy(base + at * es, h.raw_data(), (size_t)h.numel() * es);
      }
      at += p.numel();
    }
    reduce_in_place(flat, Traffic::gradients);
    at = 0;
    for (size_t i = 0; i < params.size(); ++i) {
      const Tensor& p = params[i];
      if (p.dtype() != dt || has[i] == 0) continue;
      Tensor sum = flat.slice0(at, at + p.numel()).reshape(p.shape());
      if (average) sum = mul_scalar(sum, scale);
      Tensor(p).set_grad(sum.to(p.device()).contiguous().clone());
      at += p.numel();
    }
  }
}

}  // namespace cpoison::distributed
