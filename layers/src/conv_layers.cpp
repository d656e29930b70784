// Convolution and pooling layers (axon/conv_layers.h).
#include "axon/conv_layers.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <stdexcept>

#include "axon/model.h"

namespace axon {

namespace {

void expect_one_input(const std::vector<Shape>& inputs, const std::string& op) {
  if (inputs.size() != 1) throw std::invalid_argument(fmt::format("{} takes 1 input, got {}", op, inputs.size()));
}

void check_positive(const std::string& what, const char* name, const std::vector<int64_t>& v) {
  for (int64_t x : v)
    if (x < 1) throw std::invalid_argument(fmt::format("{}: {} must be positive, got {}", what, name, x));
}

std::string values_str(const std::vector<int64_t>& v) { return fmt::format("[{}]", fmt::join(v, ", ")); }

}  // namespace

ConvLayer::ConvLayer(int64_t units, ConvLayerOptions options, bool depthwise)
    : units_(units), depthwise_(depthwise), options_(std::move(options)) {
  conv_.strides = options_.strides;
  conv_.padding = options_.padding;
  conv_.input_dilation = options_.input_dilation;
  conv_.kernel_dilation = options_.kernel_dilation;
  conv_.feature_group_count = options_.feature_group_size;
  conv_.channels = options_.channels;
  if (units <= 0)
    throw std::invalid_argument(
        fmt::format("{}: {} must be positive, got {}", describe(), depthwise ? "channel_multiplier" : "units", units));
  if (options_.kernel_size.empty()) throw std::invalid_argument(fmt::format("{}: kernel_size is empty", describe()));
  check_positive(describe(), "kernel_size", options_.kernel_size);
  check_positive(describe(), "strides", options_.strides);
  check_positive(describe(), "input_dilation", options_.input_dilation);
  check_positive(describe(), "kernel_dilation", options_.kernel_dilation);
  if (options_.feature_group_size < 1 || units % options_.feature_group_size != 0)
    throw std::invalid_argument(fmt::format("{}: feature_group_size {} must be positive and divide units {}", describe(),
                                            options_.feature_group_size, units));
  for (auto [lo, hi] : options_.padding.pairs)
    if (lo < 0 || hi < 0) throw std::invalid_argument(fmt::format("{}: padding must not be negative", describe()));
  if (!options_.kernel_initializer) throw std::invalid_argument(fmt::format("{}: kernel_initializer is empty", describe()));
  if (options_.use_bias && !options_.bias_initializer)
    throw std::invalid_argument(fmt::format("{}: bias_initializer is empty", describe()));
}

std::string ConvLayer::describe() const {
  if (depthwise_)
    return fmt::format("depthwise_conv (channel_multiplier {}, kernel_size {}, {})", units_,
                       values_str(options_.kernel_size), conv_options_str(conv_));
  return fmt::format("conv ({} units, kernel_size {}, {})", units_, values_str(options_.kernel_size), conv_options_str(conv_));
}

Shape ConvLayer::kernel_shape(const Shape& in) const {
  if (in.size() < 3 || in.size() > 5)
    throw std::invalid_argument(fmt::format("{}: input of shape {} must have rank 3 to 5 (batch, 1 to 3 spatial dims, "
                                            "channels)",
                                            describe(), shape_str(in)));
  const size_t dims = in.size() - 2;
  const int64_t channels = options_.channels == ChannelsLayout::last ? in.back() : in[1];
  if (channels <= 0)
    throw std::invalid_argument(
        fmt::format("{}: the channel axis of input shape {} must have a known size", describe(), shape_str(in)));
  if (channels % options_.feature_group_size != 0)
    throw std::invalid_argument(fmt::format("{}: feature_group_size {} does not divide the {} input channels of shape {}",
                                            describe(), options_.feature_group_size, channels, shape_str(in)));
  Shape k;
  if (options_.kernel_size.size() == 1)
    k.assign(dims, options_.kernel_size[0]);
  else if (options_.kernel_size.size() == dims)
    k = options_.kernel_size;
  else
    throw std::invalid_argument(fmt::format("{}: kernel_size has {} values but input of shape {} has {} spatial dims",
                                            describe(), options_.kernel_size.size(), shape_str(in), dims));
  if (depthwise_) {  // one group per input channel, channel_multiplier outputs each
    k.push_back(1);
    k.push_back(channels * units_);
  } else {
    k.push_back(channels / options_.feature_group_size);
    k.push_back(units_);
  }
  return k;
}

Shape ConvLayer::output_shape(const std::vector<Shape>& inputs) const {
  expect_one_input(inputs, "conv");
  try {
    return conv_output_shape(inputs[0], kernel_shape(inputs[0]), options_for(inputs[0]));
  } catch (const std::invalid_argument& e) {
    // conv_output_shape names the options; say it with the units and kernel size the layer knows.
    std::string what = e.what();
    if (what.rfind(describe(), 0) == 0) throw;
    const std::string inner = fmt::format("conv ({}): ", conv_options_str(conv_));
    if (what.rfind(inner, 0) == 0) what = what.substr(inner.size());
    throw std::invalid_argument(fmt::format("{}: {}", describe(), what));
  }
}

std::vector<ParamSpec> ConvLayer::params(const std::vector<Shape>& inputs) const {
  std::vector<ParamSpec> specs{{"kernel", kernel_shape(inputs.at(0)), options_.kernel_initializer}};
  if (options_.use_bias) specs.push_back({"bias", {specs[0].shape.back()}, options_.bias_initializer});
  return specs;
}

Tensor ConvLayer::forward(const std::vector<Tensor>& inputs, std::span<const Tensor> params, const ForwardContext&) const {
  return conv(inputs.at(0), params[0], options_.use_bias ? params[1] : Tensor(), options_for(inputs.at(0).shape()));
}

ConvOptions ConvLayer::options_for(const Shape& input) const {
  if (!depthwise_ || input.size() < 3) return conv_;
  ConvOptions o = conv_;
  o.feature_group_count = options_.channels == ChannelsLayout::last ? input.back() : input[1];
  return o;
}

PoolLayer::PoolLayer(PoolKind kind, PoolOptions options) : kind_(kind), options_(std::move(options)) {
  if (options_.kernel_size.empty()) throw std::invalid_argument(fmt::format("{}: kernel_size is required", describe()));
  check_positive(describe(), "kernel_size", options_.kernel_size);
  check_positive(describe(), "strides", options_.strides);
  check_positive(describe(), "dilations", options_.dilations);
  for (auto [lo, hi] : options_.padding.pairs)
    if (lo < 0 || hi < 0) throw std::invalid_argument(fmt::format("{}: padding must not be negative", describe()));
}

PoolLayer::PoolLayer(PoolKind kind, bool keep_axes, ChannelsLayout channels)
    : kind_(kind), global_(true), keep_axes_(keep_axes) {
  options_.channels = channels;
}

std::string ConvLayer::op() const { return depthwise_ ? "depthwise_conv" : "conv"; }

std::string PoolLayer::op() const {
  if (global_) return kind_ == PoolKind::max ? "global_max_pool" : "global_avg_pool";
  return kind_ == PoolKind::max ? "max_pool" : "avg_pool";
}

std::string PoolLayer::describe() const {
  if (global_)
    return fmt::format("{} (keep_axes {}, channels {})", op(), keep_axes_,
                       options_.channels == ChannelsLayout::last ? "last" : "first");
  return fmt::format("{} ({})", op(), pool_options_str(options_));
}

Shape PoolLayer::output_shape(const std::vector<Shape>& inputs) const {
  expect_one_input(inputs, op());
  const Shape& in = inputs[0];
  try {
    if (global_) return global_pool_output_shape(in, keep_axes_, options_.channels);
    return pool_output_shape(in, options_);
  } catch (const std::invalid_argument& e) {
    std::string what = e.what();
    const std::string inner = fmt::format("pool ({}): ", pool_options_str(options_));
    if (what.rfind(inner, 0) == 0) what = what.substr(inner.size());
    throw std::invalid_argument(fmt::format("{}: {}", describe(), what));
  }
}

Tensor PoolLayer::forward(const std::vector<Tensor>& inputs, std::span<const Tensor>, const ForwardContext&) const {
  const Tensor& x = inputs.at(0);
  if (global_)
    return kind_ == PoolKind::max ? global_max_pool(x, keep_axes_, options_.channels)
                                  : global_avg_pool(x, keep_axes_, options_.channels);
  return kind_ == PoolKind::max ? max_pool(x, options_) : avg_pool(x, options_);
}

namespace {
LayerStep conv_step(int64_t units, ConvLayerOptions options, bool depthwise) {
  const Activation act = options.activation;
  auto layer = std::make_shared<ConvLayer>(units, std::move(options), depthwise);
  // As dense: an activation option becomes a layer of its own (the seed's Axon.conv).
  return {[layer, act](const Model& m) {
    Model out = Model::apply(layer, {m});
    return act == Activation::none ? out : out | activation(act);
  }};
}
}  // namespace

LayerStep conv(int64_t units, ConvLayerOptions options) { return conv_step(units, std::move(options), false); }
LayerStep depthwise_conv(int64_t channel_multiplier, ConvLayerOptions options) {
  if (options.feature_group_size != 1)
    throw std::invalid_argument(fmt::format("depthwise_conv (channel_multiplier {}): feature_group_size {} is set by the "
                                            "layer (one group per input channel); leave it 1",
                                            channel_multiplier, options.feature_group_size));
  return conv_step(channel_multiplier, std::move(options), true);
}

namespace {
LayerStep step(std::shared_ptr<const Layer> layer) {
  return {[layer](const Model& m) { return Model::apply(layer, {m}); }};
}
}  // namespace

LayerStep max_pool(PoolOptions options) { return step(std::make_shared<PoolLayer>(PoolKind::max, std::move(options))); }
LayerStep avg_pool(PoolOptions options) { return step(std::make_shared<PoolLayer>(PoolKind::avg, std::move(options))); }
LayerStep global_avg_pool(GlobalPoolOptions o) {
  return step(std::make_shared<PoolLayer>(PoolKind::avg, o.keep_axes, o.channels));
}
LayerStep global_max_pool(GlobalPoolOptions o) {
  return step(std::make_shared<PoolLayer>(PoolKind::max, o.keep_axes, o.channels));
}

}  // namespace axon
