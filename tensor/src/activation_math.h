// The scalar formula and derivative of every ActivationOp (axon/backend.h), written once and used
// by the CPU loops (cpu/activation_kernels.cpp) and the CUDA kernels (cuda/activation_kernels.cu).
//
// A is the compute type (float for f32 and bf16, double for f64). Each formula is the numerically
// stable form: softplus(x) = max(x, 0) + log1p(exp(−|x|)) never overflows, expm1 keeps ELU's
// small negative values exact, and sigmoid(x) = 1/(1 + exp(−x)) saturates to 0 or 1 without NaN.
// Derivatives take the forward input x.
#pragma once

#include <cmath>
#include <utility>

#include "kernel_support.h"
#include "axon/vector_math.h"

namespace axon::kernels::act {

// Overloads for float and double that compile for the host and for the device: CUDA's math
// headers declare these C functions __host__ __device__. On the host, f32 exp and erf are the
// branch-free vector_math.h versions, so that the CPU loops over them vectorize.
AXON_HOST_DEVICE inline float exp_(float x) {
#ifdef __CUDA_ARCH__
  return ::expf(x);
#else
  return vmath::exp(x);
#endif
}
AXON_HOST_DEVICE inline double exp_(double x) { return ::exp(x); }
AXON_HOST_DEVICE inline float expm1_(float x) { return ::expm1f(x); }
AXON_HOST_DEVICE inline double expm1_(double x) { return ::expm1(x); }
AXON_HOST_DEVICE inline float log1p_(float x) { return ::log1pf(x); }
AXON_HOST_DEVICE inline double log1p_(double x) { return ::log1p(x); }
AXON_HOST_DEVICE inline float tanh_(float x) { return ::tanhf(x); }
AXON_HOST_DEVICE inline double tanh_(double x) { return ::tanh(x); }
AXON_HOST_DEVICE inline float erf_(float x) {
#ifdef __CUDA_ARCH__
  return ::erff(x);
#else
  return vmath::erf(x);
#endif
}
AXON_HOST_DEVICE inline double erf_(double x) { return ::erf(x); }

template <class A>
AXON_HOST_DEVICE inline A abs_(A x) {
  return x < A(0) ? -x : x;
}
template <class A>
AXON_HOST_DEVICE inline A sigmoid(A x) {
  return A(1) / (A(1) + exp_(-x));
}
// log(1 + e^x) without overflow.
template <class A>
AXON_HOST_DEVICE inline A softplus(A x) {
  return (x > A(0) ? x : A(0)) + log1p_(exp_(-abs_(x)));
}
template <class A>
AXON_HOST_DEVICE inline A clamp01(A z) {
  return z < A(0) ? A(0) : (z > A(1) ? A(1) : z);
}

constexpr double kSqrt1_2 = 0.70710678118654752440;     // 1/√2
constexpr double kInvSqrt2Pi = 0.39894228040143267794;  // 1/√(2π)
constexpr double kSqrt2OverPi = 0.79788456080286535588; // √(2/π)
constexpr double kGeluCubic = 0.044715;                 // Hendrycks & Gimpel 2016, eq. for the tanh form

// f(x). a, b: ActivationParams alpha and beta in the compute type.
template <ActivationOp Op, class A>
AXON_HOST_DEVICE inline A forward(A x, A a, A b) {
  if constexpr (Op == ActivationOp::celu) {
    return x > A(0) ? x : a * expm1_(x / a);  // Barron 2017
  } else if constexpr (Op == ActivationOp::elu) {
    return x > A(0) ? x : a * expm1_(x);  // Clevert et al. 2016
  } else if constexpr (Op == ActivationOp::gelu) {
    return A(0.5) * x * (A(1) + erf_(x * A(kSqrt1_2)));  // x·Φ(x), Hendrycks & Gimpel 2016
  } else if constexpr (Op == ActivationOp::gelu_tanh) {
    const A inner = A(kSqrt2OverPi) * (x + A(kGeluCubic) * x * x * x);
    return A(0.5) * x * (A(1) + tanh_(inner));
  } else if constexpr (Op == ActivationOp::hard_sigmoid) {
    return clamp01(a * x + b);
  } else if constexpr (Op == ActivationOp::hard_silu) {
    return x * clamp01(a * x + b);
  } else if constexpr (Op == ActivationOp::hard_tanh) {
    return x > A(1) ? A(1) : (x < A(-1) ? A(-1) : x);
  } else if constexpr (Op == ActivationOp::leaky_relu) {
    return x > A(0) ? x : a * x;  // Maas et al. 2013
  } else if constexpr (Op == ActivationOp::log_sigmoid) {
    return -softplus(-x);
  } else if constexpr (Op == ActivationOp::mish) {
    return x * tanh_(softplus(x));  // Misra 2019
  } else if constexpr (Op == ActivationOp::relu6) {
    return x < A(0) ? A(0) : (x > A(6) ? A(6) : x);
  } else if constexpr (Op == ActivationOp::selu) {
    return b * (x > A(0) ? x : a * expm1_(x));  // Klambauer et al. 2017
  } else if constexpr (Op == ActivationOp::silu) {
    return x * sigmoid(x);  // Elfwing et al. 2018
  } else if constexpr (Op == ActivationOp::softplus) {
    return softplus(x);
  } else {
    static_assert(Op == ActivationOp::softsign);
    return x / (A(1) + abs_(x));
  }
}

// f'(x). At a kink point the derivative is PyTorch's: 0 at the ends of relu6, hard_tanh and
// hard_sigmoid; the left side's at 0 for leaky_relu, elu, celu and selu; the middle piece's at
// both ends of hard_silu (PyTorch's hardswish). tests/fixtures/activations.json checks each.
template <ActivationOp Op, class A>
AXON_HOST_DEVICE inline A derivative(A x, A a, A b) {
  if constexpr (Op == ActivationOp::celu) {
    return x > A(0) ? A(1) : exp_(x / a);
  } else if constexpr (Op == ActivationOp::elu) {
    return x > A(0) ? A(1) : a * exp_(x);
  } else if constexpr (Op == ActivationOp::gelu) {
    // Φ(x) + x·φ(x)
    return A(0.5) * (A(1) + erf_(x * A(kSqrt1_2))) + x * A(kInvSqrt2Pi) * exp_(A(-0.5) * x * x);
  } else if constexpr (Op == ActivationOp::gelu_tanh) {
    const A k = A(kSqrt2OverPi), c = A(kGeluCubic);
    const A t = tanh_(k * (x + c * x * x * x));
    return A(0.5) * (A(1) + t) + A(0.5) * x * (A(1) - t * t) * k * (A(1) + A(3) * c * x * x);
  } else if constexpr (Op == ActivationOp::hard_sigmoid) {
    const A z = a * x + b;
    return (z > A(0) && z < A(1)) ? a : A(0);
  } else if constexpr (Op == ActivationOp::hard_silu) {
    const A z = a * x + b;  // the ends belong to the middle piece here, as PyTorch's hardswish
    return clamp01(z) + ((z >= A(0) && z <= A(1)) ? a * x : A(0));
  } else if constexpr (Op == ActivationOp::hard_tanh) {
    return (x > A(-1) && x < A(1)) ? A(1) : A(0);
  } else if constexpr (Op == ActivationOp::leaky_relu) {
    return x > A(0) ? A(1) : a;
  } else if constexpr (Op == ActivationOp::log_sigmoid) {
    return sigmoid(-x);
  } else if constexpr (Op == ActivationOp::mish) {
    const A t = tanh_(softplus(x));
    return t + x * sigmoid(x) * (A(1) - t * t);
  } else if constexpr (Op == ActivationOp::relu6) {
    return (x > A(0) && x < A(6)) ? A(1) : A(0);
  } else if constexpr (Op == ActivationOp::selu) {
    return b * (x > A(0) ? A(1) : a * exp_(x));
  } else if constexpr (Op == ActivationOp::silu) {
    const A s = sigmoid(x);
    return s * (A(1) + x * (A(1) - s));
  } else if constexpr (Op == ActivationOp::softplus) {
    return sigmoid(x);
  } else {
    static_assert(Op == ActivationOp::softsign);
    const A d = A(1) + abs_(x);
    return A(1) / (d * d);
  }
}

// Calls f.template operator()<Op>() with the ActivationOp as a compile-time constant, so each
// kernel is one tight loop without a per-element switch.
template <class F>
inline void dispatch(ActivationOp op, F&& f) {
  switch (op) {
    case ActivationOp::celu: return f.template operator()<ActivationOp::celu>();
    case ActivationOp::elu: return f.template operator()<ActivationOp::elu>();
    case ActivationOp::gelu: return f.template operator()<ActivationOp::gelu>();
    case ActivationOp::gelu_tanh: return f.template operator()<ActivationOp::gelu_tanh>();
    case ActivationOp::hard_sigmoid: return f.template operator()<ActivationOp::hard_sigmoid>();
    case ActivationOp::hard_silu: return f.template operator()<ActivationOp::hard_silu>();
    case ActivationOp::hard_tanh: return f.template operator()<ActivationOp::hard_tanh>();
    case ActivationOp::leaky_relu: return f.template operator()<ActivationOp::leaky_relu>();
    case ActivationOp::log_sigmoid: return f.template operator()<ActivationOp::log_sigmoid>();
    case ActivationOp::mish: return f.template operator()<ActivationOp::mish>();
    case ActivationOp::relu6: return f.template operator()<ActivationOp::relu6>();
    case ActivationOp::selu: return f.template operator()<ActivationOp::selu>();
    case ActivationOp::silu: return f.template operator()<ActivationOp::silu>();
    case ActivationOp::softplus: return f.template operator()<ActivationOp::softplus>();
    case ActivationOp::softsign: return f.template operator()<ActivationOp::softsign>();
  }
}

}  // namespace axon::kernels::act
