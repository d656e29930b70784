// Activation functions on tensors, differentiable, with the names, options and defaults of Elixir
// Axon's Axon.Activations (shared/notes/axon-inventory.md §1).
//
// Every function takes x of any shape (the batch axis included; element-wise ones do not care
// which axis is which) in f32, f64 or bf16 (bf16 computes in f32 and rounds once) on any device,
// and returns a tensor of x's shape, dtype and device, except log_sumexp, which reduces one axis.
// The gradient flows to x. Errors (std::invalid_argument) name the function and what is at fault:
// an integer dtype ("gelu: dtype i32 is not supported ..."), an option out of range
// ("celu: alpha must be non-zero, got 0"), an axis out of range (std::out_of_range).
//
// exp, relu, sigmoid, tanh, softmax and log_softmax are declared in axon/ops.h (included here).
// linear (the identity) needs no function: Activation::linear in axon/layer.h passes x through.
#pragma once

#include <cstdint>

#include "axon/ops.h"
#include "axon/tensor.h"

namespace axon {

// Continuously differentiable ELU: x for x > 0, else alpha·(exp(x/alpha) − 1). alpha ≠ 0.
// Barron 2017, "Continuously Differentiable Exponential Linear Units". torch.nn.functional.celu.
Tensor celu(const Tensor& x, double alpha = 1.0);

// ELU: x for x > 0, else alpha·(exp(x) − 1). Clevert, Unterthiner & Hochreiter 2016. F.elu.
Tensor elu(const Tensor& x, double alpha = 1.0);

// GELU, x·Φ(x) with Φ the standard normal CDF. `none` is the exact form x·(1 + erf(x/√2))/2 (the
// seed's, and F.gelu's default); `tanh` is the approximation x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))/2
// (F.gelu(approximate='tanh'); not in the seed). Hendrycks & Gimpel 2016.
enum class GeluApproximation { none, tanh };
Tensor gelu(const Tensor& x, GeluApproximation approximate = GeluApproximation::none);

// clip(alpha·x + beta, 0, 1). The seed's defaults are alpha = 0.2, beta = 0.2 (PyTorch's
// F.hardsigmoid is alpha = 1/6, beta = 0.5). alpha and beta finite.
Tensor hard_sigmoid(const Tensor& x, double alpha = 0.2, double beta = 0.2);

// x · hard_sigmoid(x; alpha, beta). With alpha = 1/6, beta = 0.5 this is F.hardswish (Howard et al.
// 2019, "Searching for MobileNetV3"). hard_swish is the same function.
Tensor hard_silu(const Tensor& x, double alpha = 0.2, double beta = 0.2);
inline Tensor hard_swish(const Tensor& x, double alpha = 0.2, double beta = 0.2) { return hard_silu(x, alpha, beta); }

// clip(x, −1, 1). F.hardtanh.
Tensor hard_tanh(const Tensor& x);

// x for x > 0, else alpha·x. Maas, Hannun & Ng 2013. F.leaky_relu. alpha finite.
Tensor leaky_relu(const Tensor& x, double alpha = 0.01);

// log(sigmoid(x)) = −softplus(−x), computed without overflow. F.logsigmoid.
Tensor log_sigmoid(const Tensor& x);

// log Σ exp(x) along `axis` (negative counts from the end), shifted by the maximum so it neither
// overflows nor underflows. keepdim (the default, as the seed's keep_axes: true) keeps the axis with
// size 1: x {batch, n} gives {batch, 1}; keepdim = false drops it ({batch}). torch.logsumexp.
// Note: the seed at v0.8.1 omits adding the maximum back (its example gives log Σ exp(x − max));
// Axon computes the true log-sum-exp.
Tensor log_sumexp(const Tensor& x, int64_t axis = -1, bool keepdim = true);

// x·tanh(softplus(x)). Misra 2019, "Mish: A Self Regularized Non-Monotonic Activation Function".
Tensor mish(const Tensor& x);

// min(max(x, 0), 6). Howard et al. 2017 (MobileNets). F.relu6.
Tensor relu6(const Tensor& x);

// gamma·(x for x > 0, else alpha·(exp(x) − 1)), with the self-normalizing constants of Klambauer
// et al. 2017 as defaults (F.selu). alpha and gamma finite.
Tensor selu(const Tensor& x, double alpha = 1.6732632423543772848170429916717,
            double gamma = 1.0507009873554804934193349852946);

// x·sigmoid(x) (also called swish). Elfwing, Uchibe & Doya 2018. F.silu.
Tensor silu(const Tensor& x);

// log(1 + exp(x)) = max(x, 0) + log1p(exp(−|x|)). F.softplus (which returns x above 20; the two
// differ there by less than exp(−20)).
Tensor softplus(const Tensor& x);

// x / (1 + |x|). F.softsign.
Tensor softsign(const Tensor& x);

}  // namespace axon
