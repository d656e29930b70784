// CUDA convolution and pooling kernels, channels last, one thread per output element (im2col,
// pool) or per input element (col2im, pool_backward: gather form, so every element is written
// once by one thread with no atomics, and results are reproducible run to run).
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>

#include "../conv_kernels.h"
#include "../conv_math.h"
#include "kernel_common.cuh"
#include "runtime.h"

namespace axon::cuda_detail {

namespace {

// The flat input position read by output position m (flat over batch and out dims), tap j (flat
// over the kernel dims), or −1 for padding.
__device__ __forceinline__ int64_t input_position(const ConvGeometry& g, int64_t m, int64_t j) {
  const int64_t o2 = m % g.out[2], o1 = (m / g.out[2]) % g.out[1], o0 = (m / (g.out[2] * g.out[1])) % g.out[0];
  const int64_t n = m / (g.out[2] * g.out[1] * g.out[0]);
  const int64_t j2 = j % g.kernel[2], j1 = (j / g.kernel[2]) % g.kernel[1], j0 = j / (g.kernel[2] * g.kernel[1]);
  const int64_t i0 = kernels::conv_input_at(g, 0, o0, j0), i1 = kernels::conv_input_at(g, 1, o1, j1),
                i2 = kernels::conv_input_at(g, 2, o2, j2);
  if (i0 < 0 || i1 < 0 || i2 < 0) return -1;
  return ((n * g.in[0] + i0) * g.in[1] + i1) * g.in[2] + i2;
}

// col {M, taps·cg}: element (m, j, c) = x[input_position(m, j), group·cg + c] or 0.
template <class T>
__global__ void im2col_kernel(const T* x, T* col, ConvGeometry g, int64_t group, int64_t total) {
  const int64_t cg = g.channels / g.groups, taps = kernels::conv_taps(g);
  AXON_KERNEL_GRID_STRIDE(e, total) {
    const int64_t c = e % cg, j = (e / cg) % taps, m = e / (cg * taps);
    const int64_t p = input_position(g, m, j);
    col[e] = p < 0 ? T(0.0f) : x[p * g.channels + group * cg + c];
  }
}

// Calls f(flat output position, flat tap) for every window tap that reads input position p.
template <class F>
__device__ __forceinline__ void for_each_reader(const ConvGeometry& g, int64_t p, F&& f) {
  const int64_t i2 = p % g.in[2], i1 = (p / g.in[2]) % g.in[1], i0 = (p / (g.in[2] * g.in[1])) % g.in[0];
  const int64_t n = p / (g.in[2] * g.in[1] * g.in[0]);
  for (int64_t j0 = 0; j0 < g.kernel[0]; ++j0) {
    const int64_t o0 = kernels::conv_output_at(g, 0, i0, j0);
    if (o0 < 0) continue;
    for (int64_t j1 = 0; j1 < g.kernel[1]; ++j1) {
      const int64_t o1 = kernels::conv_output_at(g, 1, i1, j1);
      if (o1 < 0) continue;
      for (int64_t j2 = 0; j2 < g.kernel[2]; ++j2) {
        const int64_t o2 = kernels::conv_output_at(g, 2, i2, j2);
        if (o2 < 0) continue;
        f(((n * g.out[0] + o0) * g.out[1] + o1) * g.out[2] + o2, (j0 * g.kernel[1] + j1) * g.kernel[2] + j2);
      }
    }
  }
}

template <class T>
__global__ void col2im_kernel(const T* col, T* dx, ConvGeometry g, int64_t group, int64_t total) {
  const int64_t cg = g.channels / g.groups, row = kernels::conv_taps(g) * cg;
  AXON_KERNEL_GRID_STRIDE(e, total) {
    const int64_t c = e % cg, p = e / cg;
    Acc<T> acc = 0;
    for_each_reader(g, p, [&](int64_t m, int64_t j) { acc += load(col, m * row + j * cg + c); });
    store(dx, p * g.channels + group * cg + c, acc);
  }
}

template <class T>
__global__ void pool_kernel(const T* x, T* out, int32_t* argmax, ConvGeometry g, bool is_max, int64_t total) {
  using A = Acc<T>;
  const int64_t C = g.channels, taps = kernels::conv_taps(g);
  AXON_KERNEL_GRID_STRIDE(e, total) {
    const int64_t c = e % C, m = e / C;
    A acc = is_max ? -INFINITY : A(0);
    int32_t arg = -1;
    for (int64_t j = 0; j < taps; ++j) {
      const int64_t p = input_position(g, m, j);
      if (p < 0) continue;
      const A v = load(x, p * C + c);
      if (is_max) {
        if (arg < 0 || v > acc || (v != v && acc == acc)) {  // first maximum; NaN propagates
          acc = v;
          arg = static_cast<int32_t>(j);
        }
      } else {
        acc += v;
      }
    }
    if (is_max) {
      store(out, e, acc);
      argmax[e] = arg;
    } else {
      store(out, e, acc / static_cast<A>(taps));
    }
  }
}

template <class T>
__global__ void pool_backward_kernel(const T* grad, const int32_t* argmax, T* dx, ConvGeometry g, bool is_max,
                                     int64_t total) {
  using A = Acc<T>;
  const int64_t C = g.channels;
  const A inv = A(1) / static_cast<A>(kernels::conv_taps(g));
  AXON_KERNEL_GRID_STRIDE(e, total) {
    const int64_t c = e % C, p = e / C;
    A acc = 0;
    for_each_reader(g, p, [&](int64_t m, int64_t j) {
      if (!is_max || argmax[m * C + c] == j) acc += load(grad, m * C + c);
    });
    store(dx, e, is_max ? acc : acc * inv);
  }
}

template <class T>
__global__ void batched_transpose_kernel(const T* x, T* out, int64_t rows, int64_t cols, int64_t total) {
  AXON_KERNEL_GRID_STRIDE(e, total) {  // e indexes out {batch, cols, rows}
    const int64_t r = e % rows, c = (e / rows) % cols, b = e / (rows * cols);
    out[e] = x[(b * rows + r) * cols + c];
  }
}

template <class F>
void floating(DType dtype, const char* kernel, F&& f) {
  kernels::dispatch_floating<bf16_t>(dtype, "cuda", kernel, std::forward<F>(f));
}

}  // namespace

void im2col(int device, const Tensor& x, const ConvGeometry& g, int64_t group, Tensor& col) {
  DeviceGuard guard(device);
  cudaStream_t stream = state(device).stream;
  const int64_t total = col.numel();
  floating(x.dtype(), "im2col", [&]<class T>() {
    im2col_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(kernels::ptr<T>(x), kernels::ptr<T>(col), g, group,
                                                                 total);
  });
  check_launch("im2col kernel launch", device);
}

void col2im(int device, const Tensor& col, const ConvGeometry& g, int64_t group, Tensor& dx) {
  DeviceGuard guard(device);
  cudaStream_t stream = state(device).stream;
  const int64_t total = g.batch * kernels::conv_in_positions(g) * (g.channels / g.groups);
  floating(dx.dtype(), "col2im", [&]<class T>() {
    col2im_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(kernels::ptr<T>(col), kernels::ptr<T>(dx), g, group,
                                                                 total);
  });
  check_launch("col2im kernel launch", device);
}

void pool(int device, PoolKind kind, const Tensor& x, const ConvGeometry& g, Tensor& out, Tensor* argmax) {
  DeviceGuard guard(device);
  cudaStream_t stream = state(device).stream;
  const int64_t total = out.numel();
  floating(x.dtype(), "pool", [&]<class T>() {
    pool_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(kernels::ptr<T>(x), kernels::ptr<T>(out),
                                                               argmax ? kernels::ptr<int32_t>(*argmax) : nullptr, g,
                                                               kind == PoolKind::max, total);
  });
  check_launch("pool kernel launch", device);
}

void pool_backward(int device, PoolKind kind, const Tensor& grad, const ConvGeometry& g, const Tensor* argmax,
                   Tensor& dx) {
  DeviceGuard guard(device);
  cudaStream_t stream = state(device).stream;
  const int64_t total = dx.numel();
  floating(dx.dtype(), "pool_backward", [&]<class T>() {
    pool_backward_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(
        kernels::ptr<T>(grad), argmax ? kernels::ptr<int32_t>(*argmax) : nullptr, kernels::ptr<T>(dx), g,
        kind == PoolKind::max, total);
  });
  check_launch("pool_backward kernel launch", device);
}

void batched_transpose(int device, const Tensor& x, int64_t batch, int64_t rows, int64_t cols, Tensor& out) {
  DeviceGuard guard(device);
  cudaStream_t stream = state(device).stream;
  const int64_t total = batch * rows * cols;
  floating(x.dtype(), "batched_transpose", [&]<class T>() {
    batched_transpose_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(kernels::ptr<T>(x), kernels::ptr<T>(out),
                                                                            rows, cols, total);
  });
  check_launch("batched_transpose kernel launch", device);
}

}  // namespace axon::cuda_detail
