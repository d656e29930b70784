// CUDA kernels of the embedding gradient and of memory-efficient scaled dot-product attention
// (axon/attention_ops.h). Compiled with nvcc and checked warning-free; not yet run on a GPU.
//
// Attention: one thread per query row walks the keys with an online softmax (running maximum and
// sum; Milakov & Gimelshein 2018), accumulating the output row in place, and writes the row's
// log-sum-exp; no {lq, lk} score matrix exists. The backward pass (FlashAttention, Dao et al. 2022)
// recomputes the probabilities from lse: one kernel per query row for dq (and delta = dout·out),
// one per key row for dk and dv, so every output element is written by one thread, no atomics.
// These are simple, correct kernels, not tuned ones (no shared-memory tiling, no tensor cores).
#include <cstdint>

#include "../attention_kernels.h"
#include "kernel_common.cuh"
#include "runtime.h"

namespace axon::cuda_detail {

namespace {

template <class T>
__device__ __forceinline__ T inf_of() {
  return static_cast<T>(__longlong_as_double(0x7ff0000000000000LL));
}

__device__ __forceinline__ bool allowed(const AttentionParams& p, const int32_t* mask, int64_t b, int64_t i,
                                        int64_t j) {
  if (p.causal && j > i) return false;
  return !(mask && mask[b * p.lk + j] != 0);
}

template <class T>
__global__ void index_add_rows_kernel(const T* src, const int64_t* idx, T* out, int64_t k, int64_t row) {
  AXON_KERNEL_GRID_STRIDE(e, k * row) atomicAdd(out + idx[e / row] * row + e % row, src[e]);
}

template <class T>
__global__ void attention_kernel(const T* q, const T* k, const T* v, const int32_t* mask, AttentionParams p, T* out,
                                 T* lse) {
  AXON_KERNEL_GRID_STRIDE(r, p.batch * p.heads * p.lq) {
    const int64_t i = r % p.lq, bh = r / p.lq, b = bh / p.heads;
    const T* qi = q + r * p.d;
    const T* kb = k + bh * p.lk * p.d;
    const T* vb = v + bh * p.lk * p.dv;
    T* o = out + r * p.dv;
    for (int64_t c = 0; c < p.dv; ++c) o[c] = T(0);
    T m = -inf_of<T>(), l = T(0);
    for (int64_t j = 0; j < p.lk; ++j) {
      if (!allowed(p, mask, b, i, j)) continue;
      T s = T(0);
      for (int64_t c = 0; c < p.d; ++c) s += qi[c] * kb[j * p.d + c];
      s *= static_cast<T>(p.scale);
      const T m_new = s > m ? s : m;
      const T alpha = exp(m - m_new), pj = exp(s - m_new);
      for (int64_t c = 0; c < p.dv; ++c) o[c] = o[c] * alpha + pj * vb[j * p.dv + c];
      l = l * alpha + pj;
      m = m_new;
    }
    if (l == T(0)) {
      lse[r] = inf_of<T>();
      continue;
    }
    for (int64_t c = 0; c < p.dv; ++c) o[c] /= l;
    lse[r] = m + log(l);
  }
}

template <class T>
__global__ void attention_dq_kernel(const T* q, const T* k, const T* v, const int32_t* mask, const T* out,
                                    const T* lse, const T* dout, AttentionParams p, T* dq) {
  AXON_KERNEL_GRID_STRIDE(r, p.batch * p.heads * p.lq) {
    const int64_t i = r % p.lq, bh = r / p.lq, b = bh / p.heads;
    const T* qi = q + r * p.d;
    const T* gi = dout + r * p.dv;
    const T* kb = k + bh * p.lk * p.d;
    const T* vb = v + bh * p.lk * p.dv;
    T* dqi = dq + r * p.d;
    for (int64_t c = 0; c < p.d; ++c) dqi[c] = T(0);
    if (isinf(lse[r])) continue;
    T delta = T(0);
    for (int64_t c = 0; c < p.dv; ++c) delta += gi[c] * out[r * p.dv + c];
    for (int64_t j = 0; j < p.lk; ++j) {
      if (!allowed(p, mask, b, i, j)) continue;
      T s = T(0), dp = T(0);
      for (int64_t c = 0; c < p.d; ++c) s += qi[c] * kb[j * p.d + c];
      for (int64_t c = 0; c < p.dv; ++c) dp += gi[c] * vb[j * p.dv + c];
      const T pij = exp(s * static_cast<T>(p.scale) - lse[r]);
      const T ds = pij * (dp - delta) * static_cast<T>(p.scale);
      for (int64_t c = 0; c < p.d; ++c) dqi[c] += ds * kb[j * p.d + c];
    }
  }
}

template <class T>
__global__ void attention_dkdv_kernel(const T* q, const T* k, const T* v, const int32_t* mask, const T* out,
                                      const T* lse, const T* dout, AttentionParams p, T* dk, T* dv) {
  AXON_KERNEL_GRID_STRIDE(r, p.batch * p.heads * p.lk) {
    const int64_t j = r % p.lk, bh = r / p.lk, b = bh / p.heads;
    const T* kj = k + r * p.d;
    const T* vj = v + r * p.dv;
    T* dkj = dk + r * p.d;
    T* dvj = dv + r * p.dv;
    for (int64_t c = 0; c < p.d; ++c) dkj[c] = T(0);
    for (int64_t c = 0; c < p.dv; ++c) dvj[c] = T(0);
    for (int64_t i = 0; i < p.lq; ++i) {
      const int64_t row = bh * p.lq + i;
      if (!allowed(p, mask, b, i, j) || isinf(lse[row])) continue;
      const T* qi = q + row * p.d;
      const T* gi = dout + row * p.dv;
      T s = T(0), dp = T(0), delta = T(0);
      for (int64_t c = 0; c < p.d; ++c) s += qi[c] * kj[c];
      for (int64_t c = 0; c < p.dv; ++c) {
        dp += gi[c] * vj[c];
        delta += gi[c] * out[row * p.dv + c];
      }
      const T pij = exp(s * static_cast<T>(p.scale) - lse[row]);
      const T ds = pij * (dp - delta) * static_cast<T>(p.scale);
      for (int64_t c = 0; c < p.dv; ++c) dvj[c] += pij * gi[c];
      for (int64_t c = 0; c < p.d; ++c) dkj[c] += ds * qi[c];
    }
  }
}

// f32 or f64 (the front end widens bf16).
template <class F>
void f32_f64(DType dtype, const char* kernel, F&& f) {
  if (dtype == DType::f32) return f.template operator()<float>();
  if (dtype == DType::f64) return f.template operator()<double>();
  throw std::invalid_argument(std::string("cuda kernel ") + kernel + ": dtype " + dtype_name(dtype) +
                              " is not supported (f32 or f64)");
}

}  // namespace

void index_add_rows(int device, const Tensor& src, const Tensor& indices, Tensor& out) {
  DeviceGuard guard(device);
  const int64_t k = indices.numel();
  if (k == 0 || src.numel() == 0) return;
  const int64_t row = src.numel() / k;
  f32_f64(out.dtype(), "index_add_rows", [&]<class T>() {
    index_add_rows_kernel<T><<<blocks_for(k * row), kThreads, 0, state(device).stream>>>(
        kernels::ptr<T>(src), kernels::ptr<int64_t>(indices), kernels::ptr<T>(out), k, row);
  });
  check_launch("index_add_rows kernel launch", device);
}

void attention(int device, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* mask,
               const AttentionParams& p, Tensor& out, Tensor& lse) {
  DeviceGuard guard(device);
  const int32_t* m = mask ? kernels::ptr<int32_t>(*mask) : nullptr;
  f32_f64(q.dtype(), "attention", [&]<class T>() {
    attention_kernel<T><<<blocks_for(p.batch * p.heads * p.lq), kThreads, 0, state(device).stream>>>(
        kernels::ptr<T>(q), kernels::ptr<T>(k), kernels::ptr<T>(v), m, p, kernels::ptr<T>(out), kernels::ptr<T>(lse));
  });
  check_launch("attention kernel launch", device);
}

void attention_backward(int device, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* mask,
                        const Tensor& out, const Tensor& lse, const Tensor& dout, const AttentionParams& p, Tensor& dq,
                        Tensor& dk, Tensor& dv) {
  DeviceGuard guard(device);
  const int32_t* m = mask ? kernels::ptr<int32_t>(*mask) : nullptr;
  cudaStream_t stream = state(device).stream;
  f32_f64(q.dtype(), "attention_backward", [&]<class T>() {
    attention_dq_kernel<T><<<blocks_for(p.batch * p.heads * p.lq), kThreads, 0, stream>>>(
        kernels::ptr<T>(q), kernels::ptr<T>(k), kernels::ptr<T>(v), m, kernels::ptr<T>(out), kernels::ptr<T>(lse),
        kernels::ptr<T>(dout), p, kernels::ptr<T>(dq));
    attention_dkdv_kernel<T><<<blocks_for(p.batch * p.heads * p.lk), kThreads, 0, stream>>>(
        kernels::ptr<T>(q), kernels::ptr<T>(k), kernels::ptr<T>(v), m, kernels::ptr<T>(out), kernels::ptr<T>(lse),
        kernels::ptr<T>(dout), p, kernels::ptr<T>(dk), kernels::ptr<T>(dv));
  });
  check_launch("attention_backward kernel launch", device);
}

}  // namespace axon::cuda_detail
