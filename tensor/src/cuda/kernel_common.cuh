// What the CUDA kernel files share (activation, layer, norm/shape and conv kernels): element load
// and store in the accumulation type (bf16 widened to f32 and rounded once on the way back), the
// launch shape, and the grid-stride loop. Internal linkage, like the kernels that use it.
#pragma once

#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>

#include "../kernel_support.h"

namespace axon::cuda_detail {
namespace {

using bf16_t = __nv_bfloat16;
using kernels::Acc;

template <class T>
__device__ __forceinline__ Acc<T> load(const T* p, int64_t i) {
  return static_cast<Acc<T>>(p[i]);
}
template <>
__device__ __forceinline__ float load<bf16_t>(const bf16_t* p, int64_t i) {
  return __bfloat162float(p[i]);
}
template <class T>
__device__ __forceinline__ void store(T* p, int64_t i, Acc<T> v) {
  p[i] = static_cast<T>(v);
}
template <>
__device__ __forceinline__ void store<bf16_t>(bf16_t* p, int64_t i, float v) {
  p[i] = __float2bfloat16(v);
}

constexpr int kThreads = 256;

// At least one block: a launch of zero blocks is an error, and grid-stride loops do nothing for n = 0.
int blocks_for(int64_t n) {
  return static_cast<int>(std::clamp<int64_t>((n + kThreads - 1) / kThreads, 1, 65535 * 8));
}

}  // namespace
}  // namespace axon::cuda_detail

#define AXON_KERNEL_GRID_STRIDE(i, n) \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += static_cast<int64_t>(gridDim.x) * blockDim.x)
