// Reductions: sum and mean over everything or one axis, and argmax.
#include "axon/autograd.h"
#include "axon/ops.h"
#include "common.h"

namespace axon {

using detail::check_floating;
using detail::normalize_axis;

namespace {

// g broadcast to `shape` (g's shape must broadcast to it): the backward of a sum.
Tensor expand_to(const Tensor& g, const Shape& shape) {
  Tensor out = Tensor::zeros(shape, g.options());
  if (out.numel() > 0) backend(g.device()).binary(BinaryOp::add, out, g, out);
  return out;
}

}  // namespace

Tensor sum(const Tensor& x) {
  check_floating("sum", x);
  Tensor out = Tensor::empty({}, x.options());
  if (x.numel() == 0) out.fill(0.0);
  else backend(x.device()).sum_all(x, out);
  // The gradient stays a tensor on the device: no host round trip.
  return record("sum", out, {x}, [shape = x.shape()](const Tensor& g, GradSlots& grads) { grads.add(0, expand_to(g, shape)); });
}

Tensor sum(const Tensor& x, int64_t axis, bool keepdim) {
  check_floating("sum", x);
  const Shape& shape = x.shape();
  const int64_t a = normalize_axis(axis, x.dim(), "sum", shape);
  const AxisSplit s = split_at(shape, a);
  Shape kept = shape;
  kept[a] = 1;
  Shape out_shape = shape;
  if (keepdim) out_shape[a] = 1;
  else out_shape.erase(out_shape.begin() + a);
  Tensor out = Tensor::empty(out_shape, x.options());
  if (out.numel() > 0) backend(x.device()).sum_axis(x, s, 0.0f, out);
  return record("sum", out, {x}, [shape, kept](const Tensor& g, GradSlots& grads) {
    grads.add(0, expand_to(g.reshape(kept), shape));
  });
}

Tensor mean(const Tensor& x) {
  const int64_t n = x.numel();
  if (n == 0) throw std::invalid_argument("mean: empty tensor");
  return mul_scalar(sum(x), 1.0f / static_cast<float>(n));
}

Tensor mean(const Tensor& x, int64_t axis, bool keepdim) {
  const int64_t n = x.size(axis);
  if (n == 0) throw std::invalid_argument("mean: empty axis in shape " + shape_str(x.shape()));
  return mul_scalar(sum(x, axis, keepdim), 1.0f / static_cast<float>(n));
}

Tensor argmax(const Tensor& x) {
  detail::require_2d("argmax", x, "input");
  check_floating("argmax", x);
  if (x.size(1) == 0 && x.size(0) > 0) throw std::invalid_argument("argmax: rows of shape " + shape_str(x.shape()) + " are empty");
  Tensor out = Tensor::empty({x.size(0)}, {DType::i64, x.device()});
  if (out.numel() > 0) backend(x.device()).argmax_rows(x, out);
  return out;
}

std::vector<int64_t> argmax_rows(const Tensor& x) {
  Tensor host = argmax(x).to(Device::cpu());
  const int64_t* p = host.data_as<int64_t>();
  return {p, p + host.numel()};
}

Tensor all_finite(const Tensor& x) {
  check_floating("all_finite", x);
  Tensor out = Tensor::empty({}, {DType::f32, x.device()});
  if (x.numel() == 0) out.fill(1.0);
  else backend(x.device()).all_finite(x, out);
  return out;
}

}  // namespace axon
