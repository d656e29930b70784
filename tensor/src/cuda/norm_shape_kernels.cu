// CUDA group-statistics normalization and shape kernels (axon/backend.h). As the layer_norm
// kernels (layer_kernels.cu), the normalization gives one thread to each lane and, for dgamma and
// dbeta, one thread to each channel walking its elements in a fixed order, so results are
// reproducible run to run; batch_norm's lanes are its channels, so a block-per-lane reduction is
// the next step for wide layers. resize_backward accumulates with atomicAdd in f32 (f64 for f64).
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>

#include "../norm_shape_kernels.h"
#include "../norm_shape_math.h"
#include "kernel_common.cuh"
#include "runtime.h"

namespace axon::cuda_detail {

namespace {

template <class T>
__global__ void group_norm_kernel(const T* x, const T* gamma, const T* beta, T* y, Acc<T>* mean, Acc<T>* rstd,
                                  Acc<T>* rm, Acc<T>* rv, GroupNormParams p) {
  using A = Acc<T>;
  const int64_t n = p.lane_size();
  AXON_KERNEL_GRID_STRIDE(lane, p.samples * p.groups) {
    const int64_t s = lane / p.groups, g = lane % p.groups;
    double mu = 0.0, var = 0.0;
    if (p.use_running) {
      mu = static_cast<double>(rm[g]);
      var = static_cast<double>(rv[g]);
    } else {
      for (int64_t t = 0; t < n; ++t) mu += static_cast<double>(load(x, kernels::group_element(p, s, g, t).index));
      mu /= static_cast<double>(n);
      for (int64_t t = 0; t < n; ++t) {
        const double d = static_cast<double>(load(x, kernels::group_element(p, s, g, t).index)) - mu;
        var += d * d;
      }
      var /= static_cast<double>(n);
      if (p.update_running) {  // samples is 1 here: one thread per running entry
        const double unbiased = n > 1 ? var * static_cast<double>(n) / static_cast<double>(n - 1) : var;
        rm[g] = static_cast<A>((1.0 - p.momentum) * static_cast<double>(rm[g]) + p.momentum * mu);
        rv[g] = static_cast<A>((1.0 - p.momentum) * static_cast<double>(rv[g]) + p.momentum * unbiased);
      }
    }
    const A m = static_cast<A>(mu), r = static_cast<A>(1.0 / sqrt(var + p.eps));
    mean[lane] = m;
    rstd[lane] = r;
    for (int64_t t = 0; t < n; ++t) {
      const kernels::GroupElement e = kernels::group_element(p, s, g, t);
      A v = (load(x, e.index) - m) * r;
      if (gamma) v *= load(gamma, e.channel);
      if (beta) v += load(beta, e.channel);
      store(y, e.index, v);
    }
  }
}

template <class T>
__global__ void group_norm_dx_kernel(const T* x, const T* gamma, const T* g, const Acc<T>* mean, const Acc<T>* rstd,
                                     T* dx, GroupNormParams p) {
  using A = Acc<T>;
  const int64_t n = p.lane_size();
  AXON_KERNEL_GRID_STRIDE(lane, p.samples * p.groups) {
    const int64_t s = lane / p.groups, grp = lane % p.groups;
    const A m = mean[lane], r = rstd[lane];
    double s1 = 0.0, s2 = 0.0;
    for (int64_t t = 0; t < n; ++t) {
      const kernels::GroupElement e = kernels::group_element(p, s, grp, t);
      const A xhat = (load(x, e.index) - m) * r;
      const A gw = gamma ? load(g, e.index) * load(gamma, e.channel) : load(g, e.index);
      s1 += static_cast<double>(gw);
      s2 += static_cast<double>(gw) * static_cast<double>(xhat);
    }
    const A mean1 = p.use_running ? A(0) : static_cast<A>(s1 / static_cast<double>(n));
    const A mean2 = p.use_running ? A(0) : static_cast<A>(s2 / static_cast<double>(n));
    for (int64_t t = 0; t < n; ++t) {
      const kernels::GroupElement e = kernels::group_element(p, s, grp, t);
      const A xhat = (load(x, e.index) - m) * r;
      const A gw = gamma ? load(g, e.index) * load(gamma, e.channel) : load(g, e.index);
      store(dx, e.index, r * (gw - mean1 - xhat * mean2));
    }
  }
}

// One thread per channel: Σ over its samples and elements of g·x̂ (dgamma) and g (dbeta).
template <class T>
__global__ void group_norm_dparams_kernel(const T* x, const T* g, const Acc<T>* mean, const Acc<T>* rstd, T* dgamma,
                                          T* dbeta, GroupNormParams p) {
  using A = Acc<T>;
  AXON_KERNEL_GRID_STRIDE(c, p.channels()) {
    const int64_t grp = c / p.group_size, k = c % p.group_size;
    double sg = 0.0, sb = 0.0;
    for (int64_t s = 0; s < p.samples; ++s) {
      const int64_t lane = s * p.groups + grp;
      for (int64_t pos = 0; pos < p.positions; ++pos)
        for (int64_t i = 0; i < p.inner; ++i) {
          const int64_t j = kernels::group_element(p, s, grp, (pos * p.group_size + k) * p.inner + i).index;
          const A gv = load(g, j);
          sg += static_cast<double>(gv) * static_cast<double>((load(x, j) - mean[lane]) * rstd[lane]);
          sb += static_cast<double>(gv);
        }
    }
    if (dgamma) store(dgamma, c, static_cast<A>(sg));
    if (dbeta) store(dbeta, c, static_cast<A>(sb));
  }
}

template <class E>
__global__ void axis_copy_kernel(const E* src, int64_t src_n, int64_t src_offset, E* dst, int64_t dst_n,
                                 int64_t dst_offset, int64_t inner, int64_t count, int64_t total) {
  AXON_KERNEL_GRID_STRIDE(t, total) {
    const int64_t per_outer = count * inner;
    const int64_t o = t / per_outer, rem = t % per_outer;
    dst[(o * dst_n + dst_offset) * inner + rem] = src[(o * src_n + src_offset) * inner + rem];
  }
}

struct PermuteArgs {
  int rank;
  int64_t out_sizes[8];
  int64_t in_strides[8];  // x's stride of the dim that is out's dim d
};

template <class E>
__global__ void permute_kernel(const E* x, E* out, PermuteArgs a, int64_t n) {
  AXON_KERNEL_GRID_STRIDE(i, n) {
    int64_t rest = i, offset = 0;
    for (int d = a.rank - 1; d >= 0; --d) {
      offset += (rest % a.out_sizes[d]) * a.in_strides[d];
      rest /= a.out_sizes[d];
    }
    out[i] = x[offset];
  }
}

template <class T>
__global__ void resize_kernel(const T* x, T* out, ResizeParams p, int64_t n) {
  using A = Acc<T>;
  AXON_KERNEL_GRID_STRIDE(j, n) {
    const int64_t i = j % p.inner, w = (j / p.inner) % p.out_w, h = (j / (p.inner * p.out_w)) % p.out_h;
    const int64_t o = j / (p.inner * p.out_w * p.out_h);
    const kernels::ResizeTap th = kernels::resize_tap(h, p.in_h, p.out_h, p.bilinear);
    const kernels::ResizeTap tw = kernels::resize_tap(w, p.in_w, p.out_w, p.bilinear);
    const A wh1 = static_cast<A>(th.w1), ww1 = static_cast<A>(tw.w1), wh0 = A(1) - wh1, ww0 = A(1) - ww1;
    auto at = [&](int64_t hh, int64_t ww) { return load(x, ((o * p.in_h + hh) * p.in_w + ww) * p.inner + i); };
    store(out, j, wh0 * (ww0 * at(th.i0, tw.i0) + ww1 * at(th.i0, tw.i1)) + wh1 * (ww0 * at(th.i1, tw.i0) + ww1 * at(th.i1, tw.i1)));
  }
}

template <class T>
__global__ void resize_backward_kernel(const T* g, Acc<T>* dx, ResizeParams p, int64_t n) {
  using A = Acc<T>;
  AXON_KERNEL_GRID_STRIDE(j, n) {
    const int64_t i = j % p.inner, w = (j / p.inner) % p.out_w, h = (j / (p.inner * p.out_w)) % p.out_h;
    const int64_t o = j / (p.inner * p.out_w * p.out_h);
    const kernels::ResizeTap th = kernels::resize_tap(h, p.in_h, p.out_h, p.bilinear);
    const kernels::ResizeTap tw = kernels::resize_tap(w, p.in_w, p.out_w, p.bilinear);
    const A wh1 = static_cast<A>(th.w1), ww1 = static_cast<A>(tw.w1), wh0 = A(1) - wh1, ww0 = A(1) - ww1;
    const A v = load(g, j);
    auto at = [&](int64_t hh, int64_t ww) { return dx + ((o * p.in_h + hh) * p.in_w + ww) * p.inner + i; };
    atomicAdd(at(th.i0, tw.i0), wh0 * ww0 * v);
    atomicAdd(at(th.i0, tw.i1), wh0 * ww1 * v);
    atomicAdd(at(th.i1, tw.i0), wh1 * ww0 * v);
    atomicAdd(at(th.i1, tw.i1), wh1 * ww1 * v);
  }
}

template <class F>
void floating(DType dtype, const char* kernel, F&& f) {
  kernels::dispatch_floating<bf16_t>(dtype, "cuda", kernel, std::forward<F>(f));
}

// Calls f.template operator()<E>() with E an unsigned integer type of the element's size.
template <class F>
void by_size(size_t size, F&& f) {
  switch (size) {
    case 1: return f.template operator()<uint8_t>();
    case 2: return f.template operator()<uint16_t>();
    case 4: return f.template operator()<uint32_t>();
    default: return f.template operator()<uint64_t>();
  }
}

template <class T>
T* dp(Tensor* t) {
  return t ? kernels::ptr<T>(*t) : nullptr;
}
template <class T>
const T* cp(const Tensor* t) {
  return t ? kernels::ptr<T>(*t) : nullptr;
}

}  // namespace

void group_norm(int device, const Tensor& x, const Tensor* gamma, const Tensor* beta, const GroupNormParams& p,
                Tensor& y, Tensor& mean, Tensor& rstd, Tensor* running_mean, Tensor* running_var) {
  DeviceGuard guard(device);
  cudaStream_t stream = state(device).stream;
  floating(x.dtype(), "group_norm", [&]<class T>() {
    using A = Acc<T>;
    group_norm_kernel<T><<<blocks_for(p.samples * p.groups), kThreads, 0, stream>>>(
        kernels::ptr<T>(x), cp<T>(gamma), cp<T>(beta), kernels::ptr<T>(y), kernels::ptr<A>(mean), kernels::ptr<A>(rstd),
        dp<A>(running_mean), dp<A>(running_var), p);
  });
  check_launch("group_norm kernel launch", device);
}

void group_norm_backward(int device, const Tensor& x, const Tensor* gamma, const Tensor& g, const Tensor& mean,
                         const Tensor& rstd, const GroupNormParams& p, Tensor* dx, Tensor* dgamma, Tensor* dbeta) {
  DeviceGuard guard(device);
  cudaStream_t stream = state(device).stream;
  floating(x.dtype(), "group_norm_backward", [&]<class T>() {
    using A = Acc<T>;
    if (dx)
      group_norm_dx_kernel<T><<<blocks_for(p.samples * p.groups), kThreads, 0, stream>>>(
          kernels::ptr<T>(x), cp<T>(gamma), kernels::ptr<T>(g), kernels::ptr<A>(mean), kernels::ptr<A>(rstd),
          kernels::ptr<T>(*dx), p);
    if (dgamma || dbeta)
      group_norm_dparams_kernel<T><<<blocks_for(p.channels()), kThreads, 0, stream>>>(
          kernels::ptr<T>(x), kernels::ptr<T>(g), kernels::ptr<A>(mean), kernels::ptr<A>(rstd), dp<T>(dgamma),
          dp<T>(dbeta), p);
  });
  check_launch("group_norm_backward kernel launch", device);
}

void axis_copy(int device, const Tensor& src, int64_t src_n, int64_t src_offset, Tensor& dst, int64_t dst_n,
               int64_t dst_offset, int64_t outer, int64_t inner, int64_t count) {
  const int64_t total = outer * count * inner;
  if (total == 0) return;
  DeviceGuard guard(device);
  cudaStream_t stream = state(device).stream;
  by_size(dtype_size(src.dtype()), [&]<class E>() {
    axis_copy_kernel<E><<<blocks_for(total), kThreads, 0, stream>>>(static_cast<const E*>(src.raw_data()), src_n,
                                                                    src_offset, static_cast<E*>(dst.raw_data()), dst_n,
                                                                    dst_offset, inner, count, total);
  });
  check_launch("axis_copy kernel launch", device);
}

void permute(int device, const Tensor& x, const std::vector<int64_t>& perm, Tensor& out) {
  const int64_t n = out.numel();
  if (n == 0) return;
  PermuteArgs a{};
  a.rank = static_cast<int>(perm.size());
  int64_t in_strides[8], stride = 1;
  for (int d = a.rank - 1; d >= 0; --d) {
    in_strides[d] = stride;
    stride *= x.size(d);
  }
  for (int d = 0; d < a.rank; ++d) {
    a.out_sizes[d] = out.size(d);
    a.in_strides[d] = in_strides[perm[static_cast<size_t>(d)]];
  }
  DeviceGuard guard(device);
  cudaStream_t stream = state(device).stream;
  by_size(dtype_size(x.dtype()), [&]<class E>() {
    permute_kernel<E><<<blocks_for(n), kThreads, 0, stream>>>(static_cast<const E*>(x.raw_data()),
                                                              static_cast<E*>(out.raw_data()), a, n);
  });
  check_launch("permute kernel launch", device);
}

void resize(int device, const Tensor& x, const ResizeParams& p, Tensor& out) {
  const int64_t n = out.numel();
  if (n == 0) return;
  DeviceGuard guard(device);
  cudaStream_t stream = state(device).stream;
  floating(x.dtype(), "resize", [&]<class T>() {
    resize_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(kernels::ptr<T>(x), kernels::ptr<T>(out), p, n);
  });
  check_launch("resize kernel launch", device);
}

void resize_backward(int device, const Tensor& g, const ResizeParams& p, Tensor& dx) {
  DeviceGuard guard(device);
  cudaStream_t stream = state(device).stream;
  check(cudaMemsetAsync(dx.raw_data(), 0, static_cast<size_t>(dx.numel()) * dtype_size(dx.dtype()), stream),
        "cudaMemsetAsync (resize_backward)", device);
  const int64_t n = g.numel();
  if (n == 0) return;
  floating(g.dtype(), "resize_backward", [&]<class T>() {
    using A = Acc<T>;
    resize_backward_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(kernels::ptr<T>(g), kernels::ptr<A>(dx), p, n);
  });
  check_launch("resize_backward kernel launch", device);
}

}  // namespace axon::cuda_detail
