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
// On the CPU, f32 without input dilation runs oneDNN's convolution (forward, backward data,
// backward weights) when Axon was built with it (Debian's libdnnl-dev; set_onednn_enabled below);
// everything else, and the GPU, runs im2col + one GEMM per group (OpenBLAS or cuBLAS), whose
// backward pass is two GEMMs per group and col2im.
Tensor conv(const Tensor& x, const Tensor& kernel, const Tensor& bias, const ConvOptions& options = {});

// oneDNN for the CPU convolution, as torch.backends.mkldnn: available when Axon was built with
// it, enabled by default; set_onednn_enabled(false) makes conv run im2col + OpenBLAS GEMM instead,
// and every GEMM OpenBLAS (for comparisons; process-wide). onednn_version: "oneDNN 2.6.3", or "" when not available.
bool onednn_available();
bool onednn_enabled();
void set_onednn_enabled(bool enabled);
std::string onednn_version();
// How many convolution passes (forward, backward data, backward weights) oneDNN has run in this
// process: tests check with it that oneDNN, not the fallback, ran.
int64_t onednn_conv_calls();
// How many f32 GEMMs (linear, matmul, their gradients; not attention's tiles) ran on oneDNN's
// OpenMP team instead of OpenBLAS: they do while oneDNN is enabled once a oneDNN convolution has run
// on more than one thread, so that a CNN's dense layers share the convolutions' threads
// (docs/benchmarks.md, "The CNN"). Their results may then differ in the last bits from OpenBLAS's,
// and between thread counts.
int64_t onednn_gemm_calls();

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

// ---- conv_transpose (the seed's Axon.Layers.conv_transpose) ----
// The options of conv_transpose: strides (the upsampling factor), padding, kernel_dilation,
// channels. There is no input_dilation or feature groups (the seed has none).
struct ConvTransposeOptions {
  std::vector<int64_t> strides{};          // default 1
  Padding padding = Padding::valid();
  std::vector<int64_t> kernel_dilation{};  // default 1
  ChannelsLayout channels = ChannelsLayout::last;
};
std::string conv_transpose_options_str(const ConvTransposeOptions& options);

// The seed's transposed convolution, which is XLA's / jax.lax.conv_transpose without kernel
// flipping: conv(x, kernel, bias) with strides 1, input_dilation = strides, the same
// kernel_dilation, and padding (per spatial dim, k_eff = (k − 1)·kernel_dilation + 1, s = stride)
//   valid:    (k_eff − 1, s − 1 + max(k_eff − s, 0))           -> out = in·s + max(k_eff − s, 0)
//   same:     pad_len = k_eff + s − 2, lo = k_eff − 1 if s > k_eff − 1 else ⌈pad_len/2⌉,
//             hi = pad_len − lo                                 -> out = in·s
//   explicit: the (lo, hi) pairs as given, applied to the dilated input (as conv's)
// (Axon.Shape.conv_transpose_padding). Kernel {k..., in_channels, out_channels}, bias
// {out_channels}; x as conv's, channels last or first.
// PyTorch: F.conv_transposeNd(x, w, b, stride=s, padding=p, output_padding=op, dilation=d) with
// w = the kernel flipped along every spatial dim and permuted to {in, out, k...} equals this
// with explicit padding (k_eff − 1 − p, k_eff − 1 − p + op); in particular valid padding with
// k_eff ≥ s is PyTorch's padding 0 (the full transposed convolution).
// Computed as conv's backward pass computes dx (the kernels run channels last): one GEMM
// x · kernel {Cin, taps·Cout} then col2im (OpenBLAS or cuBLAS, and the backend's col2im), so no
// work is spent on the zeros of the input-dilated form; the backward pass is im2col and two GEMMs.
// Throws std::invalid_argument naming conv_transpose, its options and the shapes.
Tensor conv_transpose(const Tensor& x, const Tensor& kernel, const Tensor& bias, const ConvTransposeOptions& options = {});
Shape conv_transpose_output_shape(const Shape& input, const Shape& kernel, const ConvTransposeOptions& options);
// The explicit (lo, hi) padding per spatial dim conv_transpose uses for a kernel of this shape.
std::vector<std::pair<int64_t, int64_t>> conv_transpose_padding(const Shape& kernel, const ConvTransposeOptions& options);

// ---- power-average, blur and adaptive pooling ----
// Power-average pooling (the seed's Axon.Layers.lp_pool): (Σ_window x^norm)^(1/norm) with zero
// padding; window, strides (default: the kernel size), padding and dilations as max_pool. An
// integer norm ≥ 1 raises x to the power by multiplication (any sign); another positive norm
// needs x > 0 (x^norm = exp(norm·log x), NaN otherwise, as torch.pow). The gradient is infinite
// or NaN where a window's sum is 0. F.lp_pool1d/2d/3d (no padding, no dilation) is the same.
Tensor lp_pool(const Tensor& x, const PoolOptions& options, double norm = 2.0);

// Blur pooling (the seed's Axon.Layers.blur_pool, after MosaicML Composer's BlurPool): each
// channel convolved with the 3×3 binomial filter [1 2 1]ᵀ[1 2 1]/16, zero padding 1 on each
// side, stride 1 (the seed does not downsample), so the output has x's shape. 2 spatial dims
// only (rank 4), as the seed. Zhang, "Making Convolutional Networks Shift-Invariant Again" (2019).
Tensor blur_pool(const Tensor& x, ChannelsLayout channels = ChannelsLayout::last);

// Adaptive pooling (the seed's Axon.Layers.adaptive_avg/max/lp_pool): the output has
// `output_size` spatial positions (one value per spatial dim or one for all; empty: the input's
// own sizes) from windows of stride ⌊in/out⌋ and size in − (out − 1)·stride, no padding
// (Axon.Shape.adaptive_pool_window_strides/size). When out divides in these are PyTorch's
// F.adaptive_avg/max_pool windows; otherwise PyTorch's windows differ (⌊i·in/out⌋ to
// ⌈(i+1)·in/out⌉) and this follows the seed. Requires 1 ≤ out ≤ in.
Tensor adaptive_avg_pool(const Tensor& x, const std::vector<int64_t>& output_size,
                         ChannelsLayout channels = ChannelsLayout::last);
Tensor adaptive_max_pool(const Tensor& x, const std::vector<int64_t>& output_size,
                         ChannelsLayout channels = ChannelsLayout::last);
Tensor adaptive_lp_pool(const Tensor& x, const std::vector<int64_t>& output_size, double norm = 2.0,
                        ChannelsLayout channels = ChannelsLayout::last);
// The window options adaptive pooling uses for an input of this shape (throws as it does).
PoolOptions adaptive_pool_options(const Shape& input, const std::vector<int64_t>& output_size, ChannelsLayout channels);

// (Σ_spatial x^norm)^(1/norm) per batch element and channel (the seed's global_lp_pool), shapes
// as global_avg_pool.
Tensor global_lp_pool(const Tensor& x, double norm = 2.0, bool keep_axes = false,
                      ChannelsLayout channels = ChannelsLayout::last);

}  // namespace axon
