// Scalar pieces of the dropout and normalization kernels shared by the CPU loops
// (cpu/layer_kernels.cpp) and the CUDA kernels (cuda/layer_kernels.cu).
#pragma once

#include <cstdint>

#include "axon/backend.h"
#include "kernel_support.h"

namespace axon::kernels {

// 24 uniformly distributed bits for element i of the dropout mask of `seed`: SplitMix64 (Steele,
// Lea & Flood 2014) of seed + (i + 1)·φ, the top 24 bits. Counter-based, so any thread can make
// any element's bit and the mask of a seed is the same on every backend and thread count.
AXON_HOST_DEVICE inline uint32_t dropout_bits(uint64_t seed, uint64_t i) {
  uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<uint32_t>(z >> 40);
}

// Element i of a dropout (DropoutParams in axon/backend.h): x·keep_scale + keep_offset when its
// mask entry is kept, else drop_value. The A arguments are the params in the compute type.
template <class A>
AXON_HOST_DEVICE inline A dropout_element(const DropoutParams& p, int64_t i, A x, A keep_scale, A keep_offset,
                                          A drop_value) {
  const int64_t m = (i / p.per_sample) * p.channels + (i / p.inner) % p.channels;
  return dropout_bits(p.seed, static_cast<uint64_t>(m)) >= p.threshold ? x * keep_scale + keep_offset : drop_value;
}

}  // namespace axon::kernels
