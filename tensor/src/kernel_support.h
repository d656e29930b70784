// What the CPU and CUDA backends share: dtype dispatch, typed pointers, broadcast strides.
// Header-only and free of fmt, so nvcc compiles it too.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "axon/backend.h"
#include "axon/tensor.h"

#ifdef __CUDACC__
#define AXON_HOST_DEVICE __host__ __device__
#else
#define AXON_HOST_DEVICE
#endif

namespace axon::kernels {

// The type kernels compute in for element type T: float for f32 and for bfloat16 (a storage
// format: widened, computed on, rounded once), double for f64.
template <class T>
struct AccOf {
  using type = float;
};
template <>
struct AccOf<double> {
  using type = double;
};
template <class T>
using Acc = typename AccOf<T>::type;

// The first element of a tensor as T* (the backend's own types; no checks).
template <class T>
T* ptr(Tensor& t) {
  return static_cast<T*>(t.raw_data());
}
template <class T>
const T* ptr(const Tensor& t) {
  return static_cast<const T*>(t.raw_data());
}

// Calls f.template operator()<T>() with T the C++ type of a floating dtype: float, double, or the
// backend's bfloat16 type Bf16. Other dtypes throw naming the backend and kernel.
template <class Bf16, class F>
void dispatch_floating(DType dtype, const char* backend, const char* kernel, F&& f) {
  switch (dtype) {
    case DType::f32: return f.template operator()<float>();
    case DType::f64: return f.template operator()<double>();
    case DType::bf16: return f.template operator()<Bf16>();
    default:
      throw std::invalid_argument(std::string(backend) + " kernel " + kernel + ": dtype " + dtype_name(dtype) +
                                  " is not supported (f32, f64 or bf16)");
  }
}

// The same for every dtype, integers included.
template <class Bf16, class F>
void dispatch_any(DType dtype, F&& f) {
  switch (dtype) {
    case DType::f32: return f.template operator()<float>();
    case DType::f64: return f.template operator()<double>();
    case DType::bf16: return f.template operator()<Bf16>();
    case DType::i32: return f.template operator()<int32_t>();
    case DType::i64: return f.template operator()<int64_t>();
  }
}

// Strides of `shape` aligned to the last dims of `out`, 0 where `shape` broadcasts.
inline std::vector<int64_t> broadcast_strides(const Shape& shape, const Shape& out) {
  std::vector<int64_t> strides(out.size(), 0);
  int64_t stride = 1;
  for (int64_t i = static_cast<int64_t>(shape.size()) - 1, o = static_cast<int64_t>(out.size()) - 1; i >= 0; --i, --o) {
    strides[o] = shape[i] == 1 ? 0 : stride;
    stride *= shape[i];
  }
  return strides;
}

// 1 when x is inf or NaN, else 0. A plain comparison (false for NaN), which vectorizes inside
// the update loops (std::isfinite does not).
AXON_HOST_DEVICE inline uint32_t not_finite_bits(float x) { return !(x - x == 0.0f); }

// For a capturable step (AdamStep::device_step set): step_size and bc2_sqrt from the step count
// that the device holds, in double and then rounded, as the host derives them otherwise.
AXON_HOST_DEVICE inline void adam_scalars_from_step(AdamStep& h) {
  if (!h.device_step) return;
  const double t = *h.device_step;
  h.step_size = static_cast<float>(h.lr / (1.0 - ::pow(h.beta1_exact, t)));
  h.bc2_sqrt = static_cast<float>(::sqrt(1.0 - ::pow(h.beta2_exact, t)));
}

// One element of a fused Adam/AdamW step (the formula in axon/backend.h, AdamStep), the same code
// in the CPU loop and the CUDA kernel. vmax is null without amsgrad.
AXON_HOST_DEVICE inline void adam_element(const AdamStep& h, float& p, float g, float& m, float& v, float* vmax) {
  g = g + h.l2 * p;
  m = m * h.beta1 + h.one_minus_beta1 * g;
  v = v * h.beta2 + h.one_minus_beta2 * g * g;
  float second = v;
  if (vmax) {
    second = *vmax > v ? *vmax : v;
    *vmax = second;
  }
  const float denom = sqrtf(second) / h.bc2_sqrt + h.eps;
  p = p * h.decay - h.step_size * (m / denom);
}

// One element of a fused SGD step (SgdStep in axon/backend.h); buf is null without momentum.
AXON_HOST_DEVICE inline void sgd_element(const SgdStep& h, float& p, float g, float* buf) {
  float d = h.weight_decay != 0.0f ? g + h.weight_decay * p : g;
  if (buf) {
    const float b = h.first ? d : *buf * h.momentum + h.keep * d;
    *buf = b;
    d = h.nesterov ? d + h.momentum * b : b;
  }
  p -= h.lr * d;
}

}  // namespace axon::kernels
