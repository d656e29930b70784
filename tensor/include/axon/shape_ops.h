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

enum class ResizeMethod { nearest, bilinear };
// x {batch, h, w, channels} (channels_last, the seed's default) or {batch, channels, h, w}
// resized to {out_h, out_w}. nearest: source ⌊(o + ½)·in/out⌋ (the seed's; F.interpolate mode
// "nearest-exact"); bilinear: half-pixel centres, no antialiasing (F.interpolate mode "bilinear",
// align_corners=False, antialias=False; the seed antialiases when downsampling). f32, f64, bf16.
Tensor resize(const Tensor& x, int64_t out_h, int64_t out_w, ResizeMethod method = ResizeMethod::nearest,
              bool channels_last = true);

}  // namespace axon
