// Dropout and normalization: front ends and backward passes.
#include "axon/nn_ops.h"

#include <cmath>

#include "axon/autograd.h"
#include "common.h"

namespace axon {

namespace {

Tensor dropout_apply(const Tensor& x, uint64_t seed, uint32_t threshold, double scale) {
  Tensor out = Tensor::empty(x.shape(), x.options());
  if (out.numel() > 0) backend(x.device()).dropout(x, seed, threshold, scale, out);
  return out;
}

void check_param(const char* op, const char* what, const Tensor& x, const Tensor& p, int64_t axis, int64_t n) {
  if (!p.defined()) throw std::invalid_argument(fmt::format("{}: {} is undefined", op, what));
  detail::check_same(op, x, p);
  if (p.dim() != 1 || p.size(0) != n)
    throw std::invalid_argument(fmt::format("{}: {} of shape {} does not match axis {} (size {}) of input shape {}", op, what,
                                            shape_str(p.shape()), axis, n, shape_str(x.shape())));
}

Tensor norm_impl(const char* op, const Tensor& x, const Tensor& gamma, const Tensor& beta, int64_t axis,
                 const NormParams& p) {
  detail::check_floating(op, x);
  if (!std::isfinite(p.eps) || p.eps < 0)
    throw std::invalid_argument(fmt::format("{}: epsilon must be finite and non-negative, got {}", op, p.eps));
  if (!std::isfinite(p.shift)) throw std::invalid_argument(fmt::format("{}: shift must be finite, got {}", op, p.shift));
  const int64_t a = detail::normalize_axis(axis, x.dim(), op, x.shape());
  const int64_t n = x.size(a);
  if (n == 0) throw std::invalid_argument(fmt::format("{}: axis {} of input shape {} is empty", op, axis, shape_str(x.shape())));
  check_param(op, "gamma", x, gamma, axis, n);
  if (beta.defined()) check_param(op, "beta", x, beta, axis, n);
  const AxisSplit s = split_at(x.shape(), a);
  const TensorOptions stats{x.dtype() == DType::f64 ? DType::f64 : DType::f32, x.device()};
  Tensor y = Tensor::empty(x.shape(), x.options());
  Tensor mean = Tensor::empty({s.outer * s.inner}, stats), rstd = Tensor::empty({s.outer * s.inner}, stats);
  if (y.numel() > 0) backend(x.device()).norm(x, gamma, beta.defined() ? &beta : nullptr, s, p, y, mean, rstd);
  return record(op, y, {x, gamma, beta},
                [x = x.detach(), gamma = gamma.detach(), mean, rstd, s, p](const Tensor& g, GradSlots& grads) {
                  Tensor dx, dgamma, dbeta;
                  if (grads.needs(0)) dx = Tensor::empty(x.shape(), x.options());
                  if (grads.needs(1)) dgamma = Tensor::empty(gamma.shape(), gamma.options());
                  if (grads.size() > 2 && grads.needs(2)) dbeta = Tensor::empty(gamma.shape(), gamma.options());
                  if (x.numel() > 0) {
                    backend(x.device()).norm_backward(x, gamma, g, mean, rstd, s, p, dx.defined() ? &dx : nullptr,
                                                      dgamma.defined() ? &dgamma : nullptr,
                                                      dbeta.defined() ? &dbeta : nullptr);
                  } else {
                    if (dgamma.defined()) dgamma.fill(0.0);
                    if (dbeta.defined()) dbeta.fill(0.0);
                  }
                  if (dx.defined()) grads.add(0, dx);
                  if (dgamma.defined()) grads.add(1, dgamma);
                  if (dbeta.defined()) grads.add(2, dbeta);
                });
}

}  // namespace

Tensor dropout(const Tensor& x, double rate, uint64_t seed) {
  detail::check_floating("dropout", x);
  if (!std::isfinite(rate) || rate < 0.0 || rate >= 1.0)
    throw std::invalid_argument(fmt::format("dropout: rate must be in [0, 1), got {}", rate));
  if (rate == 0.0) return x;
  const uint32_t threshold = static_cast<uint32_t>(std::ceil(rate * 16777216.0));  // keep when 24 bits ≥ this
  const double scale = 1.0 / (1.0 - rate);
  Tensor out = dropout_apply(x, seed, threshold, scale);
  return record("dropout", out, {x}, [seed, threshold, scale](const Tensor& g, GradSlots& grads) {
    grads.add(0, dropout_apply(g, seed, threshold, scale));
  });
}

Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, int64_t axis, double epsilon) {
  return norm_impl("layer_norm", x, gamma, beta, axis, NormParams{epsilon, false, 0.0});
}

Tensor rms_norm(const Tensor& x, const Tensor& gamma, int64_t axis, double epsilon, double shift) {
  return norm_impl("rms_norm", x, gamma, Tensor(), axis, NormParams{epsilon, true, shift});
}

}  // namespace axon
