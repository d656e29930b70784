// CUDA dropout and normalization kernels. The normalization kernels give one thread to each lane
// (and, for dgamma/dbeta, one thread to each channel, walking the lanes in a fixed order), so
// results are reproducible run to run; they suit the channel counts of today's models (a
// block-per-lane reduction is the next step for very wide lanes).
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>

#include "../layer_kernels.h"
#include "../layer_math.h"
#include "kernel_common.cuh"
#include "runtime.h"

namespace axon::cuda_detail {

namespace {

template <class T>
__global__ void dropout_kernel(const T* x, T* out, int64_t n, DropoutParams p, Acc<T> scale, Acc<T> offset, Acc<T> drop) {
  AXON_KERNEL_GRID_STRIDE(i, n) store(out, i, kernels::dropout_element<Acc<T>>(p, i, load(x, i), scale, offset, drop));
}

template <class T>
__global__ void norm_kernel(const T* x, const T* gamma, const T* beta, T* y, Acc<T>* mean, Acc<T>* rstd, AxisSplit s,
                            double eps, bool rms, Acc<T> shift) {
  using A = Acc<T>;
  AXON_KERNEL_GRID_STRIDE(lane, s.outer * s.inner) {
    const int64_t base = (lane / s.inner) * s.n * s.inner + lane % s.inner;
    double mu = 0.0, var = 0.0;
    if (!rms) {
      for (int64_t k = 0; k < s.n; ++k) mu += static_cast<double>(load(x, base + k * s.inner));
      mu /= static_cast<double>(s.n);
    }
    for (int64_t k = 0; k < s.n; ++k) {
      const double d = static_cast<double>(load(x, base + k * s.inner)) - mu;
      var += d * d;
    }
    var /= static_cast<double>(s.n);
    const A m = static_cast<A>(mu), r = static_cast<A>(1.0 / sqrt(var + eps));
    mean[lane] = m;
    rstd[lane] = r;
    for (int64_t k = 0; k < s.n; ++k) {
      const int64_t j = base + k * s.inner;
      A v = (load(x, j) - m) * r * (load(gamma, k) + shift);
      if (beta) v += load(beta, k);
      store(y, j, v);
    }
  }
}

template <class T>
__global__ void norm_dx_kernel(const T* x, const T* gamma, const T* g, const Acc<T>* mean, const Acc<T>* rstd, T* dx,
                               AxisSplit s, bool rms, Acc<T> shift) {
  using A = Acc<T>;
  AXON_KERNEL_GRID_STRIDE(lane, s.outer * s.inner) {
    const int64_t base = (lane / s.inner) * s.n * s.inner + lane % s.inner;
    const A m = mean[lane], r = rstd[lane];
    double s1 = 0.0, s2 = 0.0;
    for (int64_t k = 0; k < s.n; ++k) {
      const int64_t j = base + k * s.inner;
      const A xhat = (load(x, j) - m) * r, gw = load(g, j) * (load(gamma, k) + shift);
      s1 += static_cast<double>(gw);
      s2 += static_cast<double>(gw) * static_cast<double>(xhat);
    }
    const A mean1 = rms ? A(0) : static_cast<A>(s1 / static_cast<double>(s.n));
    const A mean2 = static_cast<A>(s2 / static_cast<double>(s.n));
    for (int64_t k = 0; k < s.n; ++k) {
      const int64_t j = base + k * s.inner;
      const A xhat = (load(x, j) - m) * r, gw = load(g, j) * (load(gamma, k) + shift);
      store(dx, j, r * (gw - mean1 - xhat * mean2));
    }
  }
}

// One thread per channel k: Σ over lanes of g·x̂ (dgamma) and g (dbeta), in lane order.
template <class T>
__global__ void norm_dparams_kernel(const T* x, const T* g, const Acc<T>* mean, const Acc<T>* rstd, T* dgamma, T* dbeta,
                                    AxisSplit s) {
  using A = Acc<T>;
  AXON_KERNEL_GRID_STRIDE(k, s.n) {
    double sg = 0.0, sb = 0.0;
    for (int64_t lane = 0; lane < s.outer * s.inner; ++lane) {
      const int64_t j = (lane / s.inner) * s.n * s.inner + lane % s.inner + k * s.inner;
      const A gv = load(g, j);
      sg += static_cast<double>(gv) * static_cast<double>((load(x, j) - mean[lane]) * rstd[lane]);
      sb += static_cast<double>(gv);
    }
    if (dgamma) store(dgamma, k, static_cast<A>(sg));
    if (dbeta) store(dbeta, k, static_cast<A>(sb));
  }
}

template <class F>
void floating(DType dtype, const char* kernel, F&& f) {
  kernels::dispatch_floating<bf16_t>(dtype, "cuda", kernel, std::forward<F>(f));
}

template <class T>
T* dp(Tensor* t) {
  return t ? kernels::ptr<T>(*t) : nullptr;
}

}  // namespace

void dropout(int device, const Tensor& x, const DropoutParams& p, Tensor& out) {
  DeviceGuard guard(device);
  cudaStream_t stream = state(device).stream;
  const int64_t n = x.numel();
  floating(x.dtype(), "dropout", [&]<class T>() {
    using A = Acc<T>;
    dropout_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(kernels::ptr<T>(x), kernels::ptr<T>(out), n, p,
                                                             static_cast<A>(p.keep_scale), static_cast<A>(p.keep_offset),
                                                             static_cast<A>(p.drop_value));
  });
  check_launch("dropout kernel launch", device);
}

void norm(int device, const Tensor& x, const Tensor& gamma, const Tensor* beta, const AxisSplit& s, const NormParams& p,
          Tensor& y, Tensor& mean, Tensor& rstd) {
  DeviceGuard guard(device);
  cudaStream_t stream = state(device).stream;
  floating(x.dtype(), "norm", [&]<class T>() {
    using A = Acc<T>;
    norm_kernel<T><<<blocks_for(s.outer * s.inner), kThreads, 0, stream>>>(
        kernels::ptr<T>(x), kernels::ptr<T>(gamma), beta ? kernels::ptr<T>(*beta) : nullptr, kernels::ptr<T>(y),
        kernels::ptr<A>(mean), kernels::ptr<A>(rstd), s, p.eps, p.rms, static_cast<A>(p.shift));
  });
  check_launch("norm kernel launch", device);
}

void norm_backward(int device, const Tensor& x, const Tensor& gamma, const Tensor& g, const Tensor& mean,
                   const Tensor& rstd, const AxisSplit& s, const NormParams& p, Tensor* dx, Tensor* dgamma,
                   Tensor* dbeta) {
  DeviceGuard guard(device);
  cudaStream_t stream = state(device).stream;
  floating(x.dtype(), "norm_backward", [&]<class T>() {
    using A = Acc<T>;
    if (dx)
      norm_dx_kernel<T><<<blocks_for(s.outer * s.inner), kThreads, 0, stream>>>(
          kernels::ptr<T>(x), kernels::ptr<T>(gamma), kernels::ptr<T>(g), kernels::ptr<A>(mean), kernels::ptr<A>(rstd),
          kernels::ptr<T>(*dx), s, p.rms, static_cast<A>(p.shift));
    if (dgamma || dbeta)
      norm_dparams_kernel<T><<<blocks_for(s.n), kThreads, 0, stream>>>(kernels::ptr<T>(x), kernels::ptr<T>(g),
                                                                      kernels::ptr<A>(mean), kernels::ptr<A>(rstd),
                                                                      dp<T>(dgamma), dp<T>(dbeta), s);
  });
  check_launch("norm_backward kernel launch", device);
}

}  // namespace axon::cuda_detail
