// Convolution and pooling layers and their pipe builders (the seed's Axon.conv, max_pool,
// avg_pool, global_avg_pool, global_max_pool; shared/notes/axon-inventory.md §2). The functions
// they run, with their formulas, layouts and PyTorch equivalents, are in axon/conv_ops.h.
//
//   auto cnn = input({-1, 28, 28, 1}) | conv(32, {.kernel_size = {3}, .activation = Activation::relu})
//            | max_pool({.kernel_size = {2}}) | flatten() | dense(10);
//
// Options that do not depend on the input (units, kernel size, strides, dilations, groups,
// initializers) are checked when the builder is called; those that do (a kernel larger than the
// padded input, groups that do not divide the input channels, the input's rank) when the model
// is planned (init, summary), before any training step. Each error names the layer, its options
// and the input shape.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "axon/backend.h"  // PoolKind
#include "axon/conv_ops.h"
#include "axon/layer.h"
#include "axon/model.h"  // LayerStep (model.h includes this header at its end)

namespace axon {

// conv's options with the seed's defaults: kernel_size 1, strides 1, padding valid, dilations 1,
// one feature group, channels last, glorot_uniform kernel {k..., in/groups, units}, zeros bias.
// kernel_size (and strides, dilations) take one value per spatial dim or one value for all.
struct ConvLayerOptions {
  std::vector<int64_t> kernel_size = {1};
  std::vector<int64_t> strides{};
  Padding padding = Padding::valid();
  std::vector<int64_t> input_dilation{};
  std::vector<int64_t> kernel_dilation{};
  int64_t feature_group_size = 1;  // the seed's name for feature_group_count
  ChannelsLayout channels = ChannelsLayout::last;
  Activation activation = Activation::none;
  bool use_bias = true;
  Initializer kernel_initializer = initializers::glorot_uniform();
  Initializer bias_initializer = initializers::zeros();
};

class ConvLayer : public Layer {
 public:
  // depthwise: units is the channel multiplier and the groups are the input channels.
  ConvLayer(int64_t units, ConvLayerOptions options, bool depthwise = false);
  std::string op() const override;
  Shape output_shape(const std::vector<Shape>& inputs) const override;
  std::vector<ParamSpec> params(const std::vector<Shape>& inputs) const override;
  Tensor forward(const std::vector<Tensor>& inputs, std::span<const Tensor> params, const ForwardContext&) const override;

 private:
  Shape kernel_shape(const Shape& input) const;  // throws naming the options and the input shape
  std::string describe() const;                  // "conv (32 units, kernel_size [3], strides 1, ...)"
  ConvOptions options_for(const Shape& input) const;  // depthwise: the groups from the input
  int64_t units_;
  bool depthwise_;
  ConvLayerOptions options_;
  ConvOptions conv_;
};

// max_pool and avg_pool (PoolKind), and global_avg_pool / global_max_pool (`global`).
class PoolLayer : public Layer {
 public:
  PoolLayer(PoolKind kind, PoolOptions options);                             // windowed
  PoolLayer(PoolKind kind, bool keep_axes, ChannelsLayout channels);         // global
  std::string op() const override;
  Shape output_shape(const std::vector<Shape>& inputs) const override;
  Tensor forward(const std::vector<Tensor>& inputs, std::span<const Tensor>, const ForwardContext&) const override;

 private:
  std::string describe() const;
  PoolKind kind_;
  bool global_ = false, keep_axes_ = false;
  PoolOptions options_;
};

// ---- builders ----
LayerStep conv(int64_t units, ConvLayerOptions options = {});
// depthwise_conv (the seed's Axon.depthwise_conv): each input channel convolved with its own
// channel_multiplier filters: conv with feature_group_size = the input channels, kernel
// {k..., 1, C·channel_multiplier}, output channels C·channel_multiplier. Same options as conv
// (feature_group_size must stay 1: the layer sets it).
LayerStep depthwise_conv(int64_t channel_multiplier, ConvLayerOptions options = {});
// max_pool / avg_pool: kernel_size required (the seed's default is 1: a window of one element);
// strides default to the kernel size.
LayerStep max_pool(PoolOptions options);
LayerStep avg_pool(PoolOptions options);
struct GlobalPoolOptions {
  bool keep_axes = false;
  ChannelsLayout channels = ChannelsLayout::last;
};
LayerStep global_avg_pool(GlobalPoolOptions options = {});
LayerStep global_max_pool(GlobalPoolOptions options = {});

// ---- conv_transpose, separable convolutions, more pooling, bilinear ----

// conv_transpose's options with the seed's defaults (Axon.conv_transpose): kernel_size 1,
// strides 1, padding valid, kernel_dilation 1, channels last, glorot_uniform kernel
// {k..., in, units}, zeros bias. Padding and the PyTorch mapping: axon::conv_transpose.
struct ConvTransposeLayerOptions {
  std::vector<int64_t> kernel_size = {1};
  std::vector<int64_t> strides{};
  Padding padding = Padding::valid();
  std::vector<int64_t> kernel_dilation{};
  ChannelsLayout channels = ChannelsLayout::last;
  Activation activation = Activation::none;
  bool use_bias = true;
  Initializer kernel_initializer = initializers::glorot_uniform();
  Initializer bias_initializer = initializers::zeros();
};
LayerStep conv_transpose(int64_t units, ConvTransposeLayerOptions options = {});

// separable_conv2d / separable_conv3d exactly as the seed's (Axon.separable_conv2d/3d,
// Axon.Layers.separable_conv2d/3d): not depthwise-then-pointwise, but 2 (3) depthwise
// convolutions in a row, the n-th with a window along spatial dim n only. Parameters (channels
// last; C the input channels, m the channel multiplier): kernel_1 {k0, 1, 1, C·m} (3-d:
// {k0, 1, 1, 1, C·m}), kernel_2 {1, k1, 1, C·m}, (kernel_3 {1, 1, k2, 1, C·m}), and bias_1..
// {C·m}; the first multiplies the channels by m, the others keep them. Each convolution gets the
// same strides, padding and dilations (as the seed, so strides 2 downsample twice per dim).
// Output channels C·m. Same options as conv; feature_group_size must stay 1.
LayerStep separable_conv2d(int64_t channel_multiplier, ConvLayerOptions options = {});
LayerStep separable_conv3d(int64_t channel_multiplier, ConvLayerOptions options = {});

// lp_pool (the seed's; axon::lp_pool): PoolOptions as max_pool, and norm (default 2).
LayerStep lp_pool(PoolOptions options, double norm = 2.0);
// blur_pool (axon::blur_pool): 2 spatial dims, output shape = input shape.
LayerStep blur_pool(ChannelsLayout channels = ChannelsLayout::last);
// Adaptive pooling (axon::adaptive_avg_pool, ...): output_size one value per spatial dim or one
// for all; empty (the seed's nil) keeps the input's sizes.
struct AdaptivePoolOptions {
  std::vector<int64_t> output_size{};
  ChannelsLayout channels = ChannelsLayout::last;
  double norm = 2.0;  // adaptive_lp_pool only
};
LayerStep adaptive_avg_pool(AdaptivePoolOptions options = {});
LayerStep adaptive_max_pool(AdaptivePoolOptions options = {});
LayerStep adaptive_lp_pool(AdaptivePoolOptions options = {});
// global_lp_pool (axon::global_lp_pool): keep_axes and channels as global_avg_pool.
LayerStep global_lp_pool(double norm = 2.0, GlobalPoolOptions options = {});

// bilinear (the seed's Axon.bilinear; axon::bilinear): two inputs {..., in1} and {..., in2},
// kernel {units, in1, in2} (glorot_uniform), bias {units} (zeros), output {..., units}.
struct BilinearOptions {
  Activation activation = Activation::none;
  bool use_bias = true;
  Initializer kernel_initializer = initializers::glorot_uniform();
  Initializer bias_initializer = initializers::zeros();
};
Model bilinear(const Model& x1, const Model& x2, int64_t units, BilinearOptions options = {});

}  // namespace axon
