// Dropout and normalization on tensors, differentiable (the functional forms of the dropout,
// layer_norm and rms_norm layers; shared/notes/axon-inventory.md §3).
//
// x has any shape with the batch axis first (for example {batch, features} or
// {batch, time, features}) in f32, f64 or bf16 (computed in f32, statistics summed in double) on
// any device; parameters are of x's dtype and device. Errors (std::invalid_argument) name the
// function, the option or operand at fault, and the shapes, dtypes or devices involved.
#pragma once

#include <cstdint>

#include "axon/tensor.h"

namespace axon {

// Inverted dropout (Srivastava et al. 2014, "Dropout: A Simple Way to Prevent Neural Networks from
// Overfitting"): each element is zeroed with probability `rate` and the others are scaled by
// 1/(1 − rate), so the expectation is x. The mask is a function of (seed, element index) only
// (SplitMix64; tensor/src/layer_math.h): the same seed gives the same mask on the CPU and on a
// GPU, at any thread count. The gradient uses the same mask. 0 ≤ rate < 1; rate 0 returns x.
// This function always drops: the dropout layer calls it in training mode only.
Tensor dropout(const Tensor& x, double rate, uint64_t seed);

// Layer normalization (Ba, Kiros & Hinton 2016) along `axis` (default the last, the seed's
// channel_index -1): y = (x − mean)/√(var + epsilon)·gamma + beta, with mean and the biased
// variance over that axis. gamma and beta have shape {x.size(axis)}; beta may be undefined (no
// offset). With axis -1 this is F.layer_norm(x, (C,), gamma, beta, epsilon). epsilon ≥ 0.
Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, int64_t axis = -1, double epsilon = 1e-5);

// RMS normalization (Zhang & Sennrich 2019): y = x/√(mean(x²) + epsilon)·(shift + gamma) along
// `axis`, the seed's rms_norm (epsilon 1e-6, shift 0). gamma has shape {x.size(axis)}.
Tensor rms_norm(const Tensor& x, const Tensor& gamma, int64_t axis = -1, double epsilon = 1e-6, double shift = 0.0);

}  // namespace axon
