// CUDA activation kernels: one grid-stride kernel per (dtype, activation), the formula from
// activation_math.h (the same code as the CPU loops). Queued on the device's compute stream.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>

#include "../activation_kernels.h"
#include "../activation_math.h"
#include "kernel_common.cuh"
#include "runtime.h"

namespace axon::cuda_detail {

namespace {

template <class T, ActivationOp Op>
__global__ void activation_kernel(const T* x, T* out, int64_t n, Acc<T> a, Acc<T> b) {
  AXON_KERNEL_GRID_STRIDE(i, n) store(out, i, kernels::act::forward<Op>(load(x, i), a, b));
}

template <class T, ActivationOp Op>
__global__ void activation_backward_kernel(const T* g, const T* x, T* out, int64_t n, Acc<T> a, Acc<T> b) {
  AXON_KERNEL_GRID_STRIDE(i, n) store(out, i, load(g, i) * kernels::act::derivative<Op>(load(x, i), a, b));
}

// One thread per lane, as the softmax kernel; the sum of exponentials in double.
template <class T>
__global__ void log_sumexp_kernel(const T* x, T* out, AxisSplit s) {
  using A = Acc<T>;
  AXON_KERNEL_GRID_STRIDE(lane, s.outer * s.inner) {
    const int64_t base = (lane / s.inner) * s.n * s.inner + lane % s.inner;
    A max_v = load(x, base);
    for (int64_t k = 1; k < s.n; ++k) max_v = max(max_v, load(x, base + k * s.inner));
    A result = max_v;
    if (isfinite(static_cast<double>(max_v))) {
      double total = 0.0;
      for (int64_t k = 0; k < s.n; ++k) total += exp(static_cast<double>(load(x, base + k * s.inner) - max_v));
      result = max_v + static_cast<A>(log(total));
    }
    store(out, lane, result);
  }
}

template <class F>
void floating(DType dtype, const char* kernel, F&& f) {
  kernels::dispatch_floating<bf16_t>(dtype, "cuda", kernel, std::forward<F>(f));
}

}  // namespace

void activation(int device, ActivationOp op, const ActivationParams& p, const Tensor& x, Tensor& out) {
  DeviceGuard guard(device);
  cudaStream_t stream = state(device).stream;
  const int64_t n = x.numel();
  floating(x.dtype(), "activation", [&]<class T>() {
    using A = Acc<T>;
    kernels::act::dispatch(op, [&]<ActivationOp Op>() {
      activation_kernel<T, Op><<<blocks_for(n), kThreads, 0, stream>>>(kernels::ptr<T>(x), kernels::ptr<T>(out), n,
                                                                       static_cast<A>(p.alpha), static_cast<A>(p.beta));
    });
  });
  check_launch("activation kernel launch", device);
}

void activation_backward(int device, ActivationOp op, const ActivationParams& p, const Tensor& g, const Tensor& x,
                         Tensor& out) {
  DeviceGuard guard(device);
  cudaStream_t stream = state(device).stream;
  const int64_t n = x.numel();
  floating(x.dtype(), "activation_backward", [&]<class T>() {
    using A = Acc<T>;
    kernels::act::dispatch(op, [&]<ActivationOp Op>() {
      activation_backward_kernel<T, Op><<<blocks_for(n), kThreads, 0, stream>>>(
          kernels::ptr<T>(g), kernels::ptr<T>(x), kernels::ptr<T>(out), n, static_cast<A>(p.alpha),
          static_cast<A>(p.beta));
    });
  });
  check_launch("activation_backward kernel launch", device);
}

void log_sumexp(int device, const Tensor& x, const AxisSplit& s, Tensor& out) {
  DeviceGuard guard(device);
  cudaStream_t stream = state(device).stream;
  floating(x.dtype(), "log_sumexp", [&]<class T>() {
    log_sumexp_kernel<T><<<blocks_for(s.outer * s.inner), kThreads, 0, stream>>>(kernels::ptr<T>(x), kernels::ptr<T>(out), s);
  });
  check_launch("log_sumexp kernel launch", device);
}

}  // namespace axon::cuda_detail
