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


namespace {

// batch_norm, group_norm, instance_norm: checks, the kernel, and the backward pass.
//   per_sample: statistics per sample (group and instance norm) rather than over the batch
Tensor group_norm_impl(const char* op, const Tensor& x, const Tensor& gamma, const Tensor& beta, int64_t groups,
                       bool per_sample, int64_t channel_index, double epsilon, const Tensor& running_mean,
                       const Tensor& running_var, bool training, double momentum) {
  detail::check_floating(op, x);
  if (!std::isfinite(epsilon) || epsilon < 0)
    throw std::invalid_argument(fmt::format("{}: epsilon must be finite and non-negative, got {}", op, epsilon));
  if (x.dim() < 2)
    throw std::invalid_argument(
        fmt::format("{}: needs an input of rank 2 or more {{batch, ..., channels}}, got {}", op, shape_str(x.shape())));
  const int64_t a = detail::normalize_axis(channel_index, x.dim(), op, x.shape());
  if (a == 0)
    throw std::invalid_argument(
        fmt::format("{}: channel_index {} names the batch axis of shape {}", op, channel_index, shape_str(x.shape())));
  const int64_t c = x.size(a);
  if (groups <= 0 || c % groups != 0)
    throw std::invalid_argument(fmt::format("{}: num_groups {} does not divide the {} channels of input shape {}", op,
                                            groups, c, shape_str(x.shape())));
  GroupNormParams p;
  p.eps = epsilon;
  p.groups = per_sample ? groups : c;
  p.group_size = c / p.groups;
  p.samples = per_sample ? x.size(0) : 1;
  p.positions = 1;
  for (int64_t d = per_sample ? 1 : 0; d < a; ++d) p.positions *= x.size(d);
  for (int64_t d = a + 1; d < x.dim(); ++d) p.inner *= x.size(d);
  if (x.numel() > 0 && p.lane_size() == 0)
    throw std::invalid_argument(fmt::format("{}: input shape {} leaves nothing to normalize over", op, shape_str(x.shape())));
  if (gamma.defined()) check_param(op, "gamma", x, gamma, channel_index, c);
  if (beta.defined()) check_param(op, "beta", x, beta, channel_index, c);
  const TensorOptions stats{x.dtype() == DType::f64 ? DType::f64 : DType::f32, x.device()};
  const bool has_running = running_mean.defined() || running_var.defined();
  if (has_running) {
    for (const Tensor* t : {&running_mean, &running_var}) {
      const char* what = t == &running_mean ? "running_mean" : "running_var";
      if (!t->defined()) throw std::invalid_argument(fmt::format("{}: {} is undefined (give both or neither)", op, what));
      if (t->device() != x.device() || t->dtype() != stats.dtype || t->dim() != 1 || t->size(0) != c)
        throw std::invalid_argument(fmt::format("{}: {} must be {} {{{}}} on {}, got {} {} on {}", op, what,
                                                dtype_name(stats.dtype), c, x.device().str(), dtype_name(t->dtype()),
                                                shape_str(t->shape()), t->device().str()));
      if (t->requires_grad())
        throw std::invalid_argument(fmt::format("{}: {} is model state and must not require grad", op, what));
    }
  }
  if (!training && !has_running)
    throw std::invalid_argument(fmt::format("{}: inference needs running_mean and running_var", op));
  if (!(momentum >= 0.0 && momentum <= 1.0))
    throw std::invalid_argument(fmt::format("{}: momentum must be in [0, 1], got {}", op, momentum));
  p.use_running = !training;
  p.update_running = training && has_running;
  p.momentum = momentum;

  Tensor y = Tensor::empty(x.shape(), x.options());
  Tensor mean = Tensor::empty({p.samples * p.groups}, stats), rstd = Tensor::empty({p.samples * p.groups}, stats);
  Tensor rm = running_mean, rv = running_var;
  if (y.numel() > 0)
    backend(x.device()).group_norm(x, gamma.defined() ? &gamma : nullptr, beta.defined() ? &beta : nullptr, p, y, mean,
                                   rstd, has_running ? &rm : nullptr, has_running ? &rv : nullptr);
  return record(op, y, {x, gamma, beta},
                [x = x.detach(), gamma = gamma.defined() ? gamma.detach() : Tensor(), mean, rstd, p](const Tensor& g,
                                                                                                  GradSlots& grads) {
                  Tensor dx, dgamma, dbeta;
                  if (grads.needs(0)) dx = Tensor::empty(x.shape(), x.options());
                  if (grads.size() > 1 && grads.needs(1)) dgamma = Tensor::empty(gamma.shape(), gamma.options());
                  if (grads.size() > 2 && grads.needs(2)) dbeta = Tensor::empty({p.channels()}, x.options());
                  if (x.numel() > 0) {
                    backend(x.device()).group_norm_backward(x, gamma.defined() ? &gamma : nullptr, g, mean, rstd, p,
                                                            dx.defined() ? &dx : nullptr,
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

Tensor batch_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                  const Tensor& running_var, bool training, double momentum, double epsilon, int64_t channel_index) {
  return group_norm_impl("batch_norm", x, gamma, beta, 1, false, channel_index, epsilon, running_mean, running_var,
                         training, momentum);
}

Tensor group_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, int64_t num_groups, int64_t channel_index,
                  double epsilon) {
  return group_norm_impl("group_norm", x, gamma, beta, num_groups, true, channel_index, epsilon, Tensor(), Tensor(), true,
                         0.0);
}

Tensor instance_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, int64_t channel_index, double epsilon) {
  if (x.dim() < 3)
    throw std::invalid_argument(fmt::format(
        "instance_norm: needs an input with a spatial axis {{batch, ..., channels}} (rank 3 or more), got {}",
        shape_str(x.shape())));
  const int64_t a = detail::normalize_axis(channel_index, x.dim(), "instance_norm", x.shape());
  return group_norm_impl("instance_norm", x, gamma, beta, x.size(a) == 0 ? 1 : x.size(a), true, channel_index, epsilon,
                         Tensor(), Tensor(), true, 0.0);
}

}  // namespace axon
