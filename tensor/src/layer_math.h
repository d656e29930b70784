// Scalar pieces of the dropout and normalization kernels shared by the CPU loops
// (cpu/layer_kernels.cpp) and the CUDA kernels (cuda/layer_kernels.cu).
#pragma once

#include <cstdint>

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

// The weight of element i: scale when kept (dropout_bits ≥ threshold), else 0.
template <class A>
AXON_HOST_DEVICE inline A dropout_weight(uint64_t seed, uint64_t i, uint32_t threshold, A scale) {
  return dropout_bits(seed, i) >= threshold ? scale : A(0);
}

}  // namespace axon::kernels
