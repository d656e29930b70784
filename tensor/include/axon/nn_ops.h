// Dropout and normalization on tensors, differentiable (the functional forms of the dropout,
// layer_norm, rms_norm, batch_norm, group_norm and instance_norm layers; shared/notes/axon-inventory.md §3).
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

// Alpha dropout (Klambauer et al. 2017, "Self-Normalizing Neural Networks", for SELU networks):
// dropped elements become SELU's saturation −αλ, then every element is mapped to a·x + b with
// a = (q(1 + rate·(αλ)²))^(−1/2), b = a·αλ·rate, q = 1 − rate, so an input of mean 0 and variance
// 1 keeps them. F.alpha_dropout. Same mask rules as dropout.
Tensor alpha_dropout(const Tensor& x, double rate, uint64_t seed);

// Dropout of whole channels (Tompson et al. 2015, "Efficient Object Localization Using
// Convolutional Networks"): one mask entry per (sample, channel), shared by every other position
// of that sample; kept channels are scaled by 1/(1 − rate). x is {batch, ..., channels} with the
// channel axis at channel_index (default −1, channels last as the seed; 1 for channels first);
// rank ≥ 2, and the channel axis may not be the batch axis.
Tensor spatial_dropout(const Tensor& x, double rate, uint64_t seed, int64_t channel_index = -1);

// Alpha dropout of whole channels (the mask of spatial_dropout, the values of alpha_dropout).
// F.feature_alpha_dropout with channels first (channel_index 1).
Tensor feature_alpha_dropout(const Tensor& x, double rate, uint64_t seed, int64_t channel_index = -1);

// Layer normalization (Ba, Kiros & Hinton 2016) along `axis` (default the last, the seed's
// channel_index -1): y = (x − mean)/√(var + epsilon)·gamma + beta, with mean and the biased
// variance over that axis. gamma and beta have shape {x.size(axis)}; beta may be undefined (no
// offset). With axis -1 this is F.layer_norm(x, (C,), gamma, beta, epsilon). epsilon ≥ 0.
Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, int64_t axis = -1, double epsilon = 1e-5);

// RMS normalization (Zhang & Sennrich 2019): y = x/√(mean(x²) + epsilon)·(shift + gamma) along
// `axis`, the seed's rms_norm (epsilon 1e-6, shift 0). gamma has shape {x.size(axis)}.
Tensor rms_norm(const Tensor& x, const Tensor& gamma, int64_t axis = -1, double epsilon = 1e-6, double shift = 0.0);

// Batch normalization (Ioffe & Szegedy 2015, "Batch Normalization: Accelerating Deep Network
// Training by Reducing Internal Covariate Shift"): every channel c of x (the axis channel_index,
// default −1: channels last, as the seed; 1 for channels first) is normalized over every other
// axis, the batch included: y = (x − mean_c)/√(var_c + epsilon)·gamma_c + beta_c.
//   training: mean and the biased variance of this batch; running_mean and running_var (when
//             defined) are updated in place to (1 − momentum)·running + momentum·batch, with the
//             unbiased batch variance — torch.nn.functional.batch_norm(training=True). (The seed's
//             update_ema weighs the old value by momentum instead; see docs/layers.md.)
//   inference: running_mean and running_var are used (they must be defined), as constants.
// gamma and beta {C} of x's dtype and device; either may be undefined (no scale, no offset).
// running_mean and running_var {C} are f32 (f64 for f64 x) on x's device, and must not require
// grad. x has rank ≥ 2 and the channel axis is not the batch axis.
// Throws std::invalid_argument naming the op, the option and the shapes at fault.
Tensor batch_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                  const Tensor& running_var, bool training, double momentum = 0.1, double epsilon = 1e-5,
                  int64_t channel_index = -1);

// Group normalization (Wu & He 2018, "Group Normalization"): the channels of each sample are split
// into num_groups groups of C/num_groups consecutive channels, each normalized over its channels
// and every non-batch axis; then per-channel gamma and beta {C}. The same in training and
// inference. num_groups must divide C. F.group_norm with channel_index 1.
Tensor group_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, int64_t num_groups,
                  int64_t channel_index = -1, double epsilon = 1e-5);

// Instance normalization (Ulyanov, Vedaldi & Lempitsky 2016, "Instance Normalization: The Missing
// Ingredient for Fast Stylization"): each (sample, channel) normalized over the spatial axes;
// group_norm with one channel per group. F.instance_norm (no running statistics) with
// channel_index 1. Needs rank ≥ 3 (at least one spatial axis).
Tensor instance_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, int64_t channel_index = -1,
                     double epsilon = 1e-5);

}  // namespace axon
