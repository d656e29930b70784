// Convolution and pooling on tensors, 1-d, 2-d and 3-d, differentiable: the functional forms of
// the conv, max_pool, avg_pool and global pooling layers (shared/notes/axon-inventory.md §2, the
// seed's Axon.Layers.conv/max_pool/avg_pool/global_*_pool).
//
// Layouts. x is {batch, spatial..., channels} (channels last, the seed's default) or, with
// `channels = ChannelsLayout::first`, {batch, channels, spatial...} (PyTorch's layout), with 1 to
// 3 spatial dims, in f32, f64 or bf16 (computed in f32) on any device. The kernels run channels
// last; a channels-first input is transposed to channels last and the output back (one copy
// each way). A convolution kernel is {k..., in_channels/groups, out_channels} in either layout
// (the seed's kernel shape), bias {out_channels}.
//
// Options that take one value per spatial dim accept an empty list (the default for every dim)
// or a single value (used for every dim). Errors are std::invalid_argument naming the op, its
// options and the shapes involved: a kernel larger than the padded input, groups that do not
// divide the channels, non-positive strides or dilations, negative padding, a rank outside 3..5.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "axon/tensor.h"

namespace axon {

enum class ChannelsLayout : uint8_t { last, first };

// Spatial padding: valid (none), same (the output has ceil(in/stride) positions; the total
// padding max((out − 1)·stride + (k − 1)·kernel_dilation + 1 − dilated_in, 0) is split with the
// extra element after, as XLA and PyTorch's padding="same"), or explicit (lo, hi) pairs, one per
// spatial dim (or one pair for all).
struct Padding {
  enum class Kind : uint8_t { valid, same, explicit_pairs };
  Kind kind = Kind::valid;
  std::vector<std::pair<int64_t, int64_t>> pairs{};

  static Padding valid() { return {}; }
  static Padding same() { return {Kind::same, {}}; }
  static Padding explicit_pairs(std::vector<std::pair<int64_t, int64_t>> lo_hi) {
    return {Kind::explicit_pairs, std::move(lo_hi)};
  }
  bool operator==(const Padding&) const = default;
};
std::string padding_str(const Padding& padding);  // "valid", "same", "[(1, 1), (0, 2)]"

// The options of Axon.Layers.conv (XLA's ConvGeneralDilated): output position o, tap j along a
// dim reads the input-dilated position o·stride − pad_lo + j·kernel_dilation; input_dilation
// inserts input_dilation − 1 zeros between input elements (a fractionally strided convolution);
// feature_group_count splits input and output channels into that many groups, each convolved
// with its own slice of the kernel (PyTorch's groups).
struct ConvOptions {
  std::vector<int64_t> strides{};          // default 1
  Padding padding = Padding::valid();
  std::vector<int64_t> input_dilation{};   // default 1
  std::vector<int64_t> kernel_dilation{};  // default 1 (PyTorch's dilation)
  int64_t feature_group_count = 1;
  ChannelsLayout channels = ChannelsLayout::last;
};
std::string conv_options_str(const ConvOptions& options);  // for error messages and the summary

// y = conv(x, kernel) + bias: cross-correlation as torch.nn.functional.conv1d/2d/3d (which is
// this with channels first, kernel permuted to {out, in/groups, k...}). bias may be undefined.
// Output {batch, out..., out_channels} (channels last) or {batch, out_channels, out...}.
// Computed as im2col + one GEMM per group (OpenBLAS or cuBLAS); the backward pass is two GEMMs
// per group and col2im.
Tensor conv(const Tensor& x, const Tensor& kernel, const Tensor& bias, const ConvOptions& options = {});

// The output shape conv gives for an input of shape `input` (its batch may be −1) and a kernel of
// shape `kernel`; throws as conv does. Model building uses it to reject bad options early.
Shape conv_output_shape(const Shape& input, const Shape& kernel, const ConvOptions& options);

// The options of max_pool, avg_pool (Axon.Layers): window kernel_size (required, one per spatial
// dim or one for all), strides (default: the kernel size, as the seed), padding, window dilations.
struct PoolOptions {
  std::vector<int64_t> kernel_size{};
  std::vector<int64_t> strides{};    // default: kernel_size
  Padding padding = Padding::valid();
  std::vector<int64_t> dilations{};  // default 1
  ChannelsLayout channels = ChannelsLayout::last;
};
std::string pool_options_str(const PoolOptions& options);

// Max pooling: the maximum over each window; padding is −inf (never chosen), NaN propagates.
// The gradient goes to the first maximum of each window. F.max_pool1d/2d/3d.
Tensor max_pool(const Tensor& x, const PoolOptions& options);
// Average pooling: each window's sum divided by the window's size, padded positions included
// (F.avg_pool1d/2d/3d with count_include_pad=True; the seed's Nx.window_mean).
Tensor avg_pool(const Tensor& x, const PoolOptions& options);
Shape pool_output_shape(const Shape& input, const PoolOptions& options);

// The mean (maximum) over every spatial position: {batch, channels}, or with keep_axes the
// spatial dims kept with size 1 ({batch, 1..., channels} or {batch, channels, 1...}).
Tensor global_avg_pool(const Tensor& x, bool keep_axes = false, ChannelsLayout channels = ChannelsLayout::last);
Tensor global_max_pool(const Tensor& x, bool keep_axes = false, ChannelsLayout channels = ChannelsLayout::last);
Shape global_pool_output_shape(const Shape& input, bool keep_axes, ChannelsLayout channels);

}  // namespace axon
