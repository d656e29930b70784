// Normalized exponentials along one axis.
#include "axon/autograd.h"
#include "axon/ops.h"
#include "common.h"

namespace axon {

namespace {

Tensor softmax_impl(const char* op, const Tensor& x, int64_t axis, bool log_space) {
  detail::check_floating(op, x);
  const int64_t a = detail::normalize_axis(axis, x.dim(), op, x.shape());
  const AxisSplit s = split_at(x.shape(), a);
  Tensor out = Tensor::empty(x.shape(), x.options());
  if (out.numel() > 0) backend(x.device()).softmax(x, s, log_space, out);
  return record(op, out, {x}, [y = out.detach(), s, log_space](const Tensor& g, GradSlots& grads) {
    Tensor gx = Tensor::empty(y.shape(), y.options());
    if (gx.numel() > 0) backend(y.device()).softmax_backward(y, g, s, log_space, gx);
    grads.add(0, gx);
  });
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t axis) { return softmax_impl("softmax", x, axis, false); }
Tensor log_softmax(const Tensor& x, int64_t axis) { return softmax_impl("log_softmax", x, axis, true); }

}  // namespace axon
