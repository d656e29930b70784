// Shape operations on tensors, differentiable: the functional forms of the transpose, pad,
// resize, concatenate and split layers (shared/notes/axon-inventory.md §3). Any dtype for the
// copies (permute, slice, concatenate, pad); f32, f64 or bf16 for resize; any device. Errors
// (std::invalid_argument) name the op, the option at fault and the shapes.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "axon/tensor.h"

namespace axon {

// x with its axes permuted: out.size(d) = x.size(perm[d]) (rank ≤ 8). torch.permute; Nx.transpose.
// The backward pass permutes back. Copies (tensors have no strides).
Tensor permute(const Tensor& x, const std::vector<int64_t>& perm);

// `length` entries of x along `axis` starting at `start` (negative axis counts from the end).
// Copies. The backward pass embeds the gradient into zeros of x's shape.
Tensor slice(const Tensor& x, int64_t axis, int64_t start, int64_t length);

// xs joined along `axis`; every other dim must agree; one dtype and device. torch.cat.
Tensor concatenate(const std::vector<Tensor>& xs, int64_t axis = -1);

// x cut along `axis` into pieces of these sizes (they must sum to x.size(axis)). torch.split.
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t axis = -1);

// x padded with `value`: config[d] = {before, after} for every dim d (negative amounts crop, as
// Nx.pad without interior padding). F.pad with mode "constant".
Tensor pad(const Tensor& x, const std::vector<std::pair<int64_t, int64_t>>& config, double value = 0.0);

enum class ResizeMethod { nearest, bilinear, bicubic, lanczos3, lanczos5 };
// x {batch, h, w, channels} (channels_last, the seed's default) or {batch, channels, h, w}
// resized to {out_h, out_w}; f32, f64, bf16 (computed in f32). The seed's resize, which follows
// jax.image.resize (scale_and_translate):
//   nearest   source ⌊(o + ½)·in/out⌋ (F.interpolate mode "nearest-exact"); antialias is ignored.
//   bilinear  the triangle kernel, half-pixel centres.
//   bicubic   Keys' cubic convolution kernel with a = −0.5 (Keys 1981).
//   lanczos3, lanczos5  sinc(x)·sinc(x/r) for |x| < r (Duchon 1979).
// Output sample o sits at input coordinate c = (o + ½)·in/out − ½ and takes Σ_j k((j − c)/s)·x_j,
// the weights normalised to sum to 1 over the input samples (so borders need no padding). With
// antialias and out < in, s = in/out stretches the kernel into a low-pass filter (the seed's
// default); otherwise s = 1. bilinear and bicubic with antialias equal F.interpolate(mode,
// antialias=True, align_corners=False) (tests/fixtures/make_norm_shape_fixtures.py); bilinear
// without it equals F.interpolate's default. Throws std::invalid_argument naming resize and the
// shape or size at fault.
Tensor resize(const Tensor& x, int64_t out_h, int64_t out_w, ResizeMethod method = ResizeMethod::nearest,
              bool channels_last = true, bool antialias = true);
// "nearest", "bilinear", "bicubic", "lanczos3", "lanczos5".
const char* resize_method_name(ResizeMethod method);

}  // namespace axon
