// exp and erf for f32 on the CPU, written so that a loop calling them vectorizes.
//
// glibc's expf and erff are function calls with branches: a loop over them runs one element at a
// time, and in a small transformer's training step (char_lm) they took 30% of the time (GELU's erf
// forward and backward, the softmax exps of attention). These versions are branch-free arithmetic
// on floats and integers only, so GCC turns `for (i) y[i] = exp(x[i])` into SIMD code at -O3.
//
// Accuracy (checked against the double functions by tests/core/test_activations.cpp,
// Activations.F32GeluAndSiluOnTheCpuAreAccurateOnADenseGrid): exp within 2 ulp, erf within 4e-7
// relative and 2e-7 absolute. The coefficients were fitted for
// Axon by tensor/tools/fit_vector_math.py (least squares reweighted towards minimax); the methods
// are the textbook ones (Cody & Waite 1980 for the range reduction of exp; rational approximations
// of erf near 0 and of erfc(x)·exp(x²) beyond, as in Hart et al. 1968, "Computer Approximations").
//
// Host only: CUDA device code keeps CUDA's own expf and erff (see tensor/src/activation_math.h).
// Users: the CPU activation and attention kernels, and the fused lstm/gru (layers/src/recurrent_ops.cpp).
// A target whose loops call these needs -fno-trapping-math (see tensor/CMakeLists.txt) to vectorize.
#pragma once

#include <bit>
#include <cstdint>
#include <limits>

// Marks a hot CPU loop to be compiled twice: for x86-64-v3 (AVX2 and FMA, CPUs since 2013) and for
// the baseline x86-64 every build targets. The dynamic loader picks the clone the CPU runs (GCC's
// target_clones, an ifunc), so one binary is both portable and 2-3× faster in these loops. Axon's
// tensor library is built with -ffp-contract=off, so both clones round alike and give the same bits.
// GCC ≥ 12 only (older GCC lacks "arch=" in target_clones; Clang rejects target_clones on the
// templates it marks), and only where the loader resolves ifuncs (ELF with glibc).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__ELF__) && \
    defined(__GLIBC__) && !defined(__CUDACC__)
#define AXON_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define AXON_SIMD_CLONES
#endif

namespace axon::kernels::vmath {

// e^x in f32. Results below FLT_MIN (x < -87.34) are flushed to 0 rather than made subnormal;
// x > 88.72 gives +inf, NaN gives NaN.
inline float exp(float x) {
  constexpr float kMax = 88.72283f;   // ln(FLT_MAX)
  constexpr float kMin = -87.33654f;  // ln(FLT_MIN)
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;  // ln 2 = kLn2Hi + kLn2Lo, kLn2Hi exact in 10 bits:
  constexpr float kLn2Lo = -2.12194440e-4f;  // n·kLn2Hi is exact for |n| ≤ 128
  constexpr float kRound = 12582912.0f;      // 1.5·2^23: adding it rounds to an integer
  const float xc = x < kMin ? kMin : (x > kMax ? kMax : x);
  const float nf = (xc * kLog2e + kRound) - kRound;  // round(x / ln 2), in [-126, 128]
  const float r = (xc - nf * kLn2Hi) - nf * kLn2Lo;  // |r| ≤ ln(2)/2
  float p = 0.0013843221f;                           // e^r, degree 6: relative error 2.2e-9 (fit)
  p = p * r + 0.008374897f;
  p = p * r + 0.041668043f;
  p = p * r + 0.16666423f;
  p = p * r + 0.49999994f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // 2^n in two factors, 2^(n/2)·2^(n − n/2): each stays a normal float for n in [-126, 128].
  const int32_t n = static_cast<int32_t>(nf);
  const int32_t n1 = n / 2, n2 = n - n1;
  const float s1 = std::bit_cast<float>((n1 + 127) << 23), s2 = std::bit_cast<float>((n2 + 127) << 23);
  float y = p * s1 * s2;
  y = x < kMin ? 0.0f : y;
  y = x > kMax ? std::numeric_limits<float>::infinity() : y;
  return x != x ? x : y;  // NaN in, NaN out
}

// erf(x) in f32. Two ranges, both computed and one selected (no branch): x·P(x²)/Q(x²) for
// |x| < 1, and ±(1 − exp(−x²)·R(|x|)) beyond, where R approximates erfc(z)·exp(z²) and |x| is
// clamped at 3.925 (erf rounds to ±1 in f32 there). The second form keeps 1 − |erf(x)| accurate
// in absolute terms, which GELU's x·(1 + erf(x/√2)) needs for negative x. NaN gives NaN.
inline float erf(float x) {
  const float z = x < 0.0f ? -x : x;
  const float t = x * x;
  float p = -0.0013425273f;  // |x| < 1: relative error 2.5e-9 (fit), 2.7e-7 in f32
  p = p * t + 0.023075094f;
  p = p * t + 0.020652512f;
  p = p * t + 1.1283791f;
  float q = 0.037664082f;
  q = q * t + 0.35163596f;
  q = q * t + 1.0f;
  const float zc = z > 3.925f ? 3.925f : z;
  float a = -6.752838e-05f;  // R = a/b: relative error 2.2e-8 (fit), 2.6e-7 in f32
  a = a * zc + 0.24778043f;
  a = a * zc + 0.75402564f;
  a = a * zc + 1.0015012f;
  float b = 0.43682584f;
  b = b * zc + 1.3568728f;
  b = b * zc + 1.8913262f;
  b = b * zc + 1.0f;
  const bool near_zero = z < 1.0f;  // one division serves both ranges
  const float ratio = (near_zero ? x * p : exp(-zc * zc) * a) / (near_zero ? q : b);
  const float tail = 1.0f - ratio;
  const float y = near_zero ? ratio : (x < 0.0f ? -tail : tail);
  return x != x ? x : y;
}

}  // namespace axon::kernels::vmath
