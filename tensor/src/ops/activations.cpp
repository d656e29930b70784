// Activation functions: front ends and backward passes. The element-wise ones share one kernel pair
// per backend (Backend::activation / activation_backward); their gradient needs the input.
#include "axon/activations.h"

#include <cmath>

#include "axon/autograd.h"
#include "common.h"

namespace axon {

namespace {

void check_finite_option(const char* op, const char* option, double value) {
  if (!std::isfinite(value))
    throw std::invalid_argument(fmt::format("{}: {} must be finite, got {}", op, option, value));
}

Tensor elementwise(const char* op_name, ActivationOp op, const Tensor& x, ActivationParams p = {}) {
  detail::check_floating(op_name, x);
  Tensor out = Tensor::empty(x.shape(), x.options());
  if (out.numel() > 0) backend(x.device()).activation(op, p, x, out);
  return record(op_name, out, {x}, [op, p, saved = x.detach()](const Tensor& g, GradSlots& grads) {
    Tensor gx = Tensor::empty(g.shape(), g.options());
    if (gx.numel() > 0) backend(g.device()).activation_backward(op, p, g, saved, gx);
    grads.add(0, gx);
  });
}

}  // namespace

Tensor celu(const Tensor& x, double alpha) {
  check_finite_option("celu", "alpha", alpha);
  if (alpha == 0.0) throw std::invalid_argument("celu: alpha must be non-zero, got 0");
  return elementwise("celu", ActivationOp::celu, x, {alpha, 0.0});
}

Tensor elu(const Tensor& x, double alpha) {
  check_finite_option("elu", "alpha", alpha);
  return elementwise("elu", ActivationOp::elu, x, {alpha, 0.0});
}

Tensor gelu(const Tensor& x, GeluApproximation approximate) {
  return approximate == GeluApproximation::tanh ? elementwise("gelu_tanh", ActivationOp::gelu_tanh, x)
                                                : elementwise("gelu", ActivationOp::gelu, x);
}

Tensor hard_sigmoid(const Tensor& x, double alpha, double beta) {
  check_finite_option("hard_sigmoid", "alpha", alpha);
  check_finite_option("hard_sigmoid", "beta", beta);
  return elementwise("hard_sigmoid", ActivationOp::hard_sigmoid, x, {alpha, beta});
}

Tensor hard_silu(const Tensor& x, double alpha, double beta) {
  check_finite_option("hard_silu", "alpha", alpha);
  check_finite_option("hard_silu", "beta", beta);
  return elementwise("hard_silu", ActivationOp::hard_silu, x, {alpha, beta});
}

Tensor hard_tanh(const Tensor& x) { return elementwise("hard_tanh", ActivationOp::hard_tanh, x); }

Tensor leaky_relu(const Tensor& x, double alpha) {
  check_finite_option("leaky_relu", "alpha", alpha);
  return elementwise("leaky_relu", ActivationOp::leaky_relu, x, {alpha, 0.0});
}

Tensor log_sigmoid(const Tensor& x) { return elementwise("log_sigmoid", ActivationOp::log_sigmoid, x); }
Tensor mish(const Tensor& x) { return elementwise("mish", ActivationOp::mish, x); }
Tensor relu6(const Tensor& x) { return elementwise("relu6", ActivationOp::relu6, x); }

Tensor selu(const Tensor& x, double alpha, double gamma) {
  check_finite_option("selu", "alpha", alpha);
  check_finite_option("selu", "gamma", gamma);
  return elementwise("selu", ActivationOp::selu, x, {alpha, gamma});
}

Tensor silu(const Tensor& x) { return elementwise("silu", ActivationOp::silu, x); }
Tensor softplus(const Tensor& x) { return elementwise("softplus", ActivationOp::softplus, x); }
Tensor softsign(const Tensor& x) { return elementwise("softsign", ActivationOp::softsign, x); }

Tensor log_sumexp(const Tensor& x, int64_t axis, bool keepdim) {
  detail::check_floating("log_sumexp", x);
  const int64_t a = detail::normalize_axis(axis, x.dim(), "log_sumexp", x.shape());
  if (x.size(a) == 0)
    throw std::invalid_argument(fmt::format("log_sumexp: axis {} of shape {} is empty", axis, shape_str(x.shape())));
  const AxisSplit s = split_at(x.shape(), a);
  Shape kept = x.shape();
  kept[a] = 1;
  Shape out_shape = kept;
  if (!keepdim) out_shape.erase(out_shape.begin() + a);
  Tensor out = Tensor::empty(out_shape, x.options());
  if (out.numel() > 0) backend(x.device()).log_sumexp(x, s, out);
  // d lse / dx = softmax(x) along the axis: dx = softmax(x) ⊙ g (g broadcast along the axis).
  return record("log_sumexp", out, {x}, [saved = x.detach(), s, kept](const Tensor& g, GradSlots& grads) {
    Tensor p = Tensor::empty(saved.shape(), saved.options());
    if (p.numel() > 0) backend(saved.device()).softmax(saved, s, false, p);
    Tensor gx = Tensor::empty(saved.shape(), saved.options());
    if (gx.numel() > 0) backend(saved.device()).binary(BinaryOp::mul, p, g.reshape(kept), gx);
    grads.add(0, gx);
  });
}

}  // namespace axon
