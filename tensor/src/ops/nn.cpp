// Dropout and normalization: front ends and backward passes.
#include "axon/nn_ops.h"

#include <algorithm>
#include <cmath>

#include "axon/autograd.h"
#include "common.h"

namespace axon {

namespace {

Tensor dropout_apply(const Tensor& x, const DropoutParams& p) {
  Tensor out = Tensor::empty(x.shape(), x.options());
  if (out.numel() > 0) backend(x.device()).dropout(x, p, out);
  return out;
}

// SELU's α·λ (Klambauer et al. 2017): alpha dropout's dropped value before the affine correction is
// −kAlphaLambda, SELU's negative saturation.
constexpr double kAlphaLambda = 1.6732632423543772848170429916717 * 1.0507009873554804934193349852946;

// Every dropout: `alpha` keeps SELU's mean and variance (dropped values go to −αλ, then a·x + b);
// `per_channel` draws one mask entry per (sample, channel), shared by the sample's other dims.
Tensor dropout_impl(const char* op, const Tensor& x, double rate, uint64_t seed, bool alpha, bool per_channel,
                    int64_t channel_index) {
  detail::check_floating(op, x);
  if (!std::isfinite(rate) || rate < 0.0 || rate >= 1.0)
    throw std::invalid_argument(fmt::format("{}: rate must be in [0, 1), got {}", op, rate));
  DropoutParams p;
  if (per_channel) {
    if (x.dim() < 2)
      throw std::invalid_argument(
          fmt::format("{}: needs an input of rank 2 or more {{batch, ..., channels}}, got {}", op, shape_str(x.shape())));
    const int64_t c = detail::normalize_axis(channel_index, x.dim(), op, x.shape());
    if (c == 0)
      throw std::invalid_argument(
          fmt::format("{}: channel_index {} names the batch axis of shape {}", op, channel_index, shape_str(x.shape())));
    p.channels = x.size(c);
    p.per_sample = x.size(0) == 0 ? 1 : std::max<int64_t>(1, x.numel() / x.size(0));
    for (int64_t d = c + 1; d < x.dim(); ++d) p.inner *= x.size(d);
    if (p.channels == 0) p.channels = 1;  // an empty tensor: nothing to mask
  }
  if (rate == 0.0) return x;
  p.seed = seed;
  p.threshold = static_cast<uint32_t>(std::ceil(rate * 16777216.0));  // keep when the 24 bits are ≥ this
  const double keep = 1.0 - rate;
  if (alpha) {
    // a·x + b keeps mean 0 and variance 1 of a SELU's output: Klambauer et al. 2017, eq. (10);
    // the same constants as torch.nn.functional.alpha_dropout.
    const double a = 1.0 / std::sqrt(keep * (1.0 + rate * kAlphaLambda * kAlphaLambda));
    const double b = a * kAlphaLambda * rate;
    p.keep_scale = a;
    p.keep_offset = b;
    p.drop_value = -a * kAlphaLambda + b;
  } else {
    p.keep_scale = 1.0 / keep;
  }
  Tensor out = dropout_apply(x, p);
  DropoutParams grad_p = p;  // d out / d x: keep_scale where kept, 0 where dropped
  grad_p.keep_offset = 0.0;
  grad_p.drop_value = 0.0;
  return record(op, out, {x}, [grad_p](const Tensor& g, GradSlots& grads) { grads.add(0, dropout_apply(g, grad_p)); });
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
  return dropout_impl("dropout", x, rate, seed, false, false, -1);
}
Tensor alpha_dropout(const Tensor& x, double rate, uint64_t seed) {
  return dropout_impl("alpha_dropout", x, rate, seed, true, false, -1);
}
Tensor spatial_dropout(const Tensor& x, double rate, uint64_t seed, int64_t channel_index) {
  return dropout_impl("spatial_dropout", x, rate, seed, false, true, channel_index);
}
Tensor feature_alpha_dropout(const Tensor& x, double rate, uint64_t seed, int64_t channel_index) {
  return dropout_impl("feature_alpha_dropout", x, rate, seed, true, true, channel_index);
}

Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, int64_t axis, double epsilon) {
  return norm_impl("layer_norm", x, gamma, beta, axis, NormParams{epsilon, false, 0.0});
}

Tensor rms_norm(const Tensor& x, const Tensor& gamma, int64_t axis, double epsilon, double shift) {
  return norm_impl("rms_norm", x, gamma, Tensor(), axis, NormParams{epsilon, true, shift});
}

}  // namespace axon
