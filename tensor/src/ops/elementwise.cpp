// Element-wise ops (binary with broadcasting, unary, scalar): front ends and backward passes.
#include <algorithm>

#include "axon/autograd.h"
#include "axon/ops.h"
#include "common.h"

namespace axon {

using detail::check_floating;
using detail::check_same;
using detail::reduce_to;

Shape broadcast_shape(const Shape& a, const Shape& b) {
  const size_t d = std::max(a.size(), b.size());
  Shape out(d);
  for (size_t i = 0; i < d; ++i) {
    int64_t da = i < d - a.size() ? 1 : a[i - (d - a.size())];
    int64_t db = i < d - b.size() ? 1 : b[i - (d - b.size())];
    if (da != db && da != 1 && db != 1)
      throw std::invalid_argument(fmt::format("broadcast: shapes {} and {} are not compatible", shape_str(a), shape_str(b)));
    out[i] = da == 1 ? db : da;
  }
  return out;
}

namespace {

Tensor binary(const char* op_name, BinaryOp op, const Tensor& a, const Tensor& b) {
  check_same(op_name, a, b);
  check_floating(op_name, a);
  Shape shape;
  try {
    shape = broadcast_shape(a.shape(), b.shape());
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(fmt::format("{}: {}", op_name, e.what()));
  }
  Tensor out = Tensor::empty(shape, a.options());
  if (out.numel() > 0) backend(a.device()).binary(op, a, b, out);
  return out;
}

Tensor unary(const char* op_name, UnaryOp op, const Tensor& x, double scalar = 0.0) {
  check_floating(op_name, x);
  Tensor out = Tensor::empty(x.shape(), x.options());
  if (out.numel() > 0) backend(x.device()).unary(op, x, scalar, out);
  return out;
}

// g · op'(saved), for ops whose gradient needs their input or output.
Tensor unary_grad(UnaryOp op, const Tensor& g, const Tensor& saved) {
  Tensor out = Tensor::empty(g.shape(), g.options());
  if (out.numel() > 0) backend(g.device()).unary_backward(op, g, saved, out);
  return out;
}

}  // namespace

// ---- binary ----

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = binary("add", BinaryOp::add, a, b);
  return record("add", out, {a, b}, [sa = a.shape(), sb = b.shape()](const Tensor& g, GradSlots& grads) {
    if (grads.needs(0)) grads.add(0, reduce_to(g, sa));
    if (grads.needs(1)) grads.add(1, reduce_to(g, sb));
  });
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = binary("sub", BinaryOp::sub, a, b);
  return record("sub", out, {a, b}, [sa = a.shape(), sb = b.shape()](const Tensor& g, GradSlots& grads) {
    if (grads.needs(0)) grads.add(0, reduce_to(g, sa));
    if (grads.needs(1)) grads.add(1, reduce_to(neg(g), sb));
  });
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary("mul", BinaryOp::mul, a, b);
  return record("mul", out, {a, b}, [a, b](const Tensor& g, GradSlots& grads) {
    if (grads.needs(0)) grads.add(0, reduce_to(mul(g, b), a.shape()));
    if (grads.needs(1)) grads.add(1, reduce_to(mul(g, a), b.shape()));
  });
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor out = binary("div", BinaryOp::div, a, b);
  return record("div", out, {a, b}, [a, b, y = out.detach()](const Tensor& g, GradSlots& grads) {
    if (grads.needs(0)) grads.add(0, reduce_to(div(g, b), a.shape()));
    // d(a/b)/db = -a/b^2 = -out/b
    if (grads.needs(1)) grads.add(1, reduce_to(neg(div(mul(g, y), b)), b.shape()));
  });
}

Tensor add_scalar(const Tensor& a, float s) {
  Tensor out = unary("add_scalar", UnaryOp::add_scalar, a, s);
  return record("add_scalar", out, {a}, [](const Tensor& g, GradSlots& grads) { grads.add(0, g); });
}

Tensor mul_scalar(const Tensor& a, float s) {
  Tensor out = unary("mul_scalar", UnaryOp::mul_scalar, a, s);
  return record("mul_scalar", out, {a}, [s](const Tensor& g, GradSlots& grads) { grads.add(0, mul_scalar(g, s)); });
}

// ---- unary ----

Tensor neg(const Tensor& x) {
  Tensor out = unary("neg", UnaryOp::neg, x);
  return record("neg", out, {x}, [](const Tensor& g, GradSlots& grads) { grads.add(0, neg(g)); });
}

// The ops whose gradient is g · f'(output) or g · f'(input).
#define AXON_UNARY_SAVING(fn, op, saved)                                                              \
  Tensor fn(const Tensor& x) {                                                                        \
    Tensor out = unary(#fn, op, x);                                                                   \
    return record(#fn, out, {x}, [s = (saved).detach()](const Tensor& g, GradSlots& grads) {          \
      grads.add(0, unary_grad(op, g, s));                                                             \
    });                                                                                               \
  }

AXON_UNARY_SAVING(exp, UnaryOp::exp, out)
AXON_UNARY_SAVING(log, UnaryOp::log, x)
AXON_UNARY_SAVING(relu, UnaryOp::relu, out)
AXON_UNARY_SAVING(sigmoid, UnaryOp::sigmoid, out)
AXON_UNARY_SAVING(tanh, UnaryOp::tanh, out)
AXON_UNARY_SAVING(square, UnaryOp::square, x)
#undef AXON_UNARY_SAVING

}  // namespace axon
