// Convolution and pooling layers (axon/conv_layers.h).
#include "axon/conv_layers.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <functional>
#include <stdexcept>

#include "axon/bilinear.h"
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

void check_padding(const std::string& what, const Padding& padding) {
  for (auto [lo, hi] : padding.pairs)
    if (lo < 0 || hi < 0) throw std::invalid_argument(fmt::format("{}: padding must not be negative", what));
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
  check_padding(describe(), options_.padding);
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
  check_padding(describe(), options_.padding);
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

// ---- conv_transpose, separable convolutions, more pooling, bilinear ----

namespace axon {

namespace {

// Rethrows an std::invalid_argument from an op or shape function as "<layer>: <message>", the
// inner op's own name and option list dropped ("conv_transpose (strides 2, ...): " -> "").
template <class F>
auto as_layer_error(const std::string& layer, F&& f) {
  try {
    return f();
  } catch (const std::invalid_argument& e) {
    std::string what = e.what();
    if (what.rfind(layer, 0) == 0) throw;
    const size_t open = what.find(" ("), close = what.find("): ");
    if (open != std::string::npos && close != std::string::npos && open < close && what.find(": ") == close + 1)
      what = what.substr(close + 3);
    throw std::invalid_argument(fmt::format("{}: {}", layer, what));
  }
}

Shape spatial_kernel(const std::string& what, const std::vector<int64_t>& kernel_size, size_t dims, const Shape& in) {
  if (kernel_size.size() == 1) return Shape(dims, kernel_size[0]);
  if (kernel_size.size() == dims) return kernel_size;
  throw std::invalid_argument(fmt::format("{}: kernel_size has {} values but input of shape {} has {} spatial dims", what,
                                          kernel_size.size(), shape_str(in), dims));
}

int64_t channels_of(const std::string& what, const Shape& in, ChannelsLayout layout) {
  if (in.size() < 3 || in.size() > 5)
    throw std::invalid_argument(fmt::format("{}: input of shape {} must have rank 3 to 5 (batch, 1 to 3 spatial dims, "
                                            "channels)",
                                            what, shape_str(in)));
  const int64_t c = layout == ChannelsLayout::last ? in.back() : in[1];
  if (c <= 0)
    throw std::invalid_argument(fmt::format("{}: the channel axis of input shape {} must have a known size", what, shape_str(in)));
  return c;
}

LayerStep with_activation(std::shared_ptr<const Layer> layer, Activation act) {
  return {[layer, act](const Model& m) {
    Model out = Model::apply(layer, {m});
    return act == Activation::none ? out : out | activation(act);
  }};
}

class ConvTransposeLayer : public Layer {
 public:
  ConvTransposeLayer(int64_t units, ConvTransposeLayerOptions o) : units_(units), o_(std::move(o)) {
    ct_ = {o_.strides, o_.padding, o_.kernel_dilation, o_.channels};
    if (units <= 0) throw std::invalid_argument(fmt::format("{}: units must be positive, got {}", describe(), units));
    if (o_.kernel_size.empty()) throw std::invalid_argument(fmt::format("{}: kernel_size is empty", describe()));
    check_positive(describe(), "kernel_size", o_.kernel_size);
    check_positive(describe(), "strides", o_.strides);
    check_positive(describe(), "kernel_dilation", o_.kernel_dilation);
    check_padding(describe(), o_.padding);
    if (!o_.kernel_initializer) throw std::invalid_argument(fmt::format("{}: kernel_initializer is empty", describe()));
    if (o_.use_bias && !o_.bias_initializer)
      throw std::invalid_argument(fmt::format("{}: bias_initializer is empty", describe()));
  }
  std::string op() const override { return "conv_transpose"; }
  Shape output_shape(const std::vector<Shape>& inputs) const override {
    expect_one_input(inputs, op());
    return as_layer_error(describe(), [&] { return conv_transpose_output_shape(inputs[0], kernel_shape(inputs[0]), ct_); });
  }
  std::vector<ParamSpec> params(const std::vector<Shape>& inputs) const override {
    std::vector<ParamSpec> specs{{"kernel", kernel_shape(inputs.at(0)), o_.kernel_initializer}};
    if (o_.use_bias) specs.push_back({"bias", {units_}, o_.bias_initializer});
    return specs;
  }
  Tensor forward(const std::vector<Tensor>& inputs, std::span<const Tensor> params, const ForwardContext&) const override {
    return conv_transpose(inputs.at(0), params[0], o_.use_bias ? params[1] : Tensor(), ct_);
  }

 private:
  std::string describe() const {
    return fmt::format("conv_transpose ({} units, kernel_size {}, {})", units_, values_str(o_.kernel_size),
                       conv_transpose_options_str(ct_));
  }
  Shape kernel_shape(const Shape& in) const {
    const int64_t c = channels_of(describe(), in, o_.channels);
    Shape k = spatial_kernel(describe(), o_.kernel_size, in.size() - 2, in);
    k.push_back(c);
    k.push_back(units_);
    return k;
  }
  int64_t units_;
  ConvTransposeLayerOptions o_;
  ConvTransposeOptions ct_;
};

class SeparableConvLayer : public Layer {
 public:
  SeparableConvLayer(int64_t multiplier, ConvLayerOptions o, size_t dims) : m_(multiplier), dims_(dims), o_(std::move(o)) {
    conv_.strides = o_.strides;
    conv_.padding = o_.padding;
    conv_.input_dilation = o_.input_dilation;
    conv_.kernel_dilation = o_.kernel_dilation;
    conv_.channels = o_.channels;
    if (multiplier <= 0)
      throw std::invalid_argument(fmt::format("{}: channel_multiplier must be positive, got {}", describe(), multiplier));
    if (o_.kernel_size.empty()) throw std::invalid_argument(fmt::format("{}: kernel_size is empty", describe()));
    if (o_.kernel_size.size() != 1 && o_.kernel_size.size() != dims)
      throw std::invalid_argument(fmt::format("{}: kernel_size needs 1 or {} values", describe(), dims));
    check_positive(describe(), "kernel_size", o_.kernel_size);
    check_positive(describe(), "strides", o_.strides);
    check_positive(describe(), "input_dilation", o_.input_dilation);
    check_positive(describe(), "kernel_dilation", o_.kernel_dilation);
    if (o_.feature_group_size != 1)
      throw std::invalid_argument(fmt::format("{}: feature_group_size {} is set by the layer (depthwise); leave it 1",
                                              describe(), o_.feature_group_size));
    check_padding(describe(), o_.padding);
    if (!o_.kernel_initializer) throw std::invalid_argument(fmt::format("{}: kernel_initializer is empty", describe()));
    if (o_.use_bias && !o_.bias_initializer)
      throw std::invalid_argument(fmt::format("{}: bias_initializer is empty", describe()));
  }
  std::string op() const override { return dims_ == 2 ? "separable_conv2d" : "separable_conv3d"; }
  Shape output_shape(const std::vector<Shape>& inputs) const override {
    expect_one_input(inputs, op());
    return as_layer_error(describe(), [&] {
      Shape s = inputs[0];
      for (const Shape& k : kernels(inputs[0])) s = conv_output_shape(s, k, depthwise(s));
      return s;
    });
  }
  std::vector<ParamSpec> params(const std::vector<Shape>& inputs) const override {
    const std::vector<Shape> ks = kernels(inputs.at(0));
    std::vector<ParamSpec> specs;
    for (size_t n = 0; n < ks.size(); ++n) {
      specs.push_back({fmt::format("kernel_{}", n + 1), ks[n], o_.kernel_initializer});
      if (o_.use_bias) specs.push_back({fmt::format("bias_{}", n + 1), {ks[n].back()}, o_.bias_initializer});
    }
    return specs;
  }
  Tensor forward(const std::vector<Tensor>& inputs, std::span<const Tensor> params, const ForwardContext&) const override {
    Tensor y = inputs.at(0);
    const size_t per = o_.use_bias ? 2 : 1;
    for (size_t n = 0; n < dims_; ++n)
      y = conv(y, params[n * per], o_.use_bias ? params[n * per + 1] : Tensor(), depthwise(y.shape()));
    return y;
  }

 private:
  std::string describe() const {
    return fmt::format("{} (channel_multiplier {}, kernel_size {}, {})", op(), m_, values_str(o_.kernel_size),
                       conv_options_str(conv_));
  }
  // The seed's kernel_n: the window along spatial dim n only; the first multiplies the channels.
  std::vector<Shape> kernels(const Shape& in) const {
    if (in.size() != dims_ + 2)
      throw std::invalid_argument(fmt::format("{}: input of shape {} must have rank {} (batch, {} spatial dims, channels)",
                                              describe(), shape_str(in), dims_ + 2, dims_));
    const int64_t c = channels_of(describe(), in, o_.channels);
    const Shape k = spatial_kernel(describe(), o_.kernel_size, dims_, in);
    std::vector<Shape> ks;
    for (size_t n = 0; n < dims_; ++n) {
      Shape s(dims_, 1);
      s[n] = k[n];
      s.push_back(1);
      s.push_back(c * m_);
      ks.push_back(s);
    }
    return ks;
  }
  ConvOptions depthwise(const Shape& in) const {
    ConvOptions o = conv_;
    o.feature_group_count = o_.channels == ChannelsLayout::last ? in.back() : in[1];
    return o;
  }
  int64_t m_;
  size_t dims_;
  ConvLayerOptions o_;
  ConvOptions conv_;
};

// A parameterless pooling layer from a shape function and a tensor function.
class FunctionPoolLayer : public Layer {
 public:
  FunctionPoolLayer(std::string op, std::string description, std::function<Shape(const Shape&)> shape,
                    std::function<Tensor(const Tensor&)> fn)
      : op_(std::move(op)), describe_(std::move(description)), shape_(std::move(shape)), fn_(std::move(fn)) {}
  std::string op() const override { return op_; }
  Shape output_shape(const std::vector<Shape>& inputs) const override {
    expect_one_input(inputs, op_);
    return as_layer_error(describe_, [&] { return shape_(inputs[0]); });
  }
  Tensor forward(const std::vector<Tensor>& inputs, std::span<const Tensor>, const ForwardContext&) const override {
    return fn_(inputs.at(0));
  }

 private:
  std::string op_, describe_;
  std::function<Shape(const Shape&)> shape_;
  std::function<Tensor(const Tensor&)> fn_;
};

void check_norm(const std::string& what, double norm) {
  if (!(norm > 0) || !std::isfinite(norm))
    throw std::invalid_argument(fmt::format("{}: norm must be positive and finite, got {}", what, norm));
}

const char* layout_name(ChannelsLayout c) { return c == ChannelsLayout::last ? "last" : "first"; }

LayerStep adaptive_step(const char* op, AdaptivePoolOptions o, bool lp) {
  const std::string what =
      lp ? fmt::format("{} (output_size {}, norm {}, channels {})", op, values_str(o.output_size), o.norm, layout_name(o.channels))
         : fmt::format("{} (output_size {}, channels {})", op, values_str(o.output_size), layout_name(o.channels));
  check_positive(what, "output_size", o.output_size);
  if (lp) check_norm(what, o.norm);
  std::function<Tensor(const Tensor&)> fn;
  const std::string name = op;
  if (name == "adaptive_avg_pool")
    fn = [o](const Tensor& x) { return adaptive_avg_pool(x, o.output_size, o.channels); };
  else if (name == "adaptive_max_pool")
    fn = [o](const Tensor& x) { return adaptive_max_pool(x, o.output_size, o.channels); };
  else
    fn = [o](const Tensor& x) { return adaptive_lp_pool(x, o.output_size, o.norm, o.channels); };
  return step(std::make_shared<FunctionPoolLayer>(
      op, what, [o](const Shape& in) { return pool_output_shape(in, adaptive_pool_options(in, o.output_size, o.channels)); },
      fn));
}

class BilinearLayer : public Layer {
 public:
  BilinearLayer(int64_t units, BilinearOptions o) : units_(units), o_(std::move(o)) {
    if (units <= 0) throw std::invalid_argument(fmt::format("bilinear ({} units): units must be positive", units));
    if (!o_.kernel_initializer) throw std::invalid_argument(fmt::format("bilinear ({} units): kernel_initializer is empty", units));
    if (o_.use_bias && !o_.bias_initializer)
      throw std::invalid_argument(fmt::format("bilinear ({} units): bias_initializer is empty", units));
  }
  std::string op() const override { return "bilinear"; }
  Shape output_shape(const std::vector<Shape>& inputs) const override {
    if (inputs.size() != 2) throw std::invalid_argument(fmt::format("bilinear takes 2 inputs, got {}", inputs.size()));
    return as_layer_error(fmt::format("bilinear ({} units)", units_),
                          [&] { return bilinear_output_shape(inputs[0], inputs[1], kernel_shape(inputs)); });
  }
  std::vector<ParamSpec> params(const std::vector<Shape>& inputs) const override {
    std::vector<ParamSpec> specs{{"kernel", kernel_shape(inputs), o_.kernel_initializer}};
    if (o_.use_bias) specs.push_back({"bias", {units_}, o_.bias_initializer});
    return specs;
  }
  Tensor forward(const std::vector<Tensor>& inputs, std::span<const Tensor> params, const ForwardContext&) const override {
    return bilinear(inputs.at(0), inputs.at(1), params[0], o_.use_bias ? params[1] : Tensor());
  }

 private:
  Shape kernel_shape(const std::vector<Shape>& in) const {
    const int64_t a = in.at(0).empty() ? 0 : in[0].back(), b = in.at(1).empty() ? 0 : in[1].back();
    return {units_, a, b};
  }
  int64_t units_;
  BilinearOptions o_;
};

}  // namespace

LayerStep conv_transpose(int64_t units, ConvTransposeLayerOptions options) {
  const Activation act = options.activation;
  return with_activation(std::make_shared<ConvTransposeLayer>(units, std::move(options)), act);
}

LayerStep separable_conv2d(int64_t channel_multiplier, ConvLayerOptions options) {
  const Activation act = options.activation;
  return with_activation(std::make_shared<SeparableConvLayer>(channel_multiplier, std::move(options), 2), act);
}
LayerStep separable_conv3d(int64_t channel_multiplier, ConvLayerOptions options) {
  const Activation act = options.activation;
  return with_activation(std::make_shared<SeparableConvLayer>(channel_multiplier, std::move(options), 3), act);
}

LayerStep lp_pool(PoolOptions options, double norm) {
  const std::string what = fmt::format("lp_pool ({}, norm {})", pool_options_str(options), norm);
  if (options.kernel_size.empty()) throw std::invalid_argument(fmt::format("{}: kernel_size is required", what));
  check_positive(what, "kernel_size", options.kernel_size);
  check_positive(what, "strides", options.strides);
  check_positive(what, "dilations", options.dilations);
  check_padding(what, options.padding);
  check_norm(what, norm);
  return step(std::make_shared<FunctionPoolLayer>(
      "lp_pool", what, [options](const Shape& in) { return pool_output_shape(in, options); },
      [options, norm](const Tensor& x) { return lp_pool(x, options, norm); }));
}

LayerStep blur_pool(ChannelsLayout channels) {
  const std::string what = fmt::format("blur_pool (channels {})", layout_name(channels));
  return step(std::make_shared<FunctionPoolLayer>(
      "blur_pool", what,
      [channels, what](const Shape& in) {
        if (in.size() != 4)
          throw std::invalid_argument(fmt::format("input of shape {} must have rank 4 (2 spatial dims)", shape_str(in)));
        const int64_t c = channels_of(what, in, channels);
        ConvOptions o{.padding = Padding::explicit_pairs({{1, 1}}), .feature_group_count = c, .channels = channels};
        return conv_output_shape(in, {3, 3, 1, c}, o);
      },
      [channels](const Tensor& x) { return blur_pool(x, channels); }));
}

LayerStep adaptive_avg_pool(AdaptivePoolOptions o) { return adaptive_step("adaptive_avg_pool", std::move(o), false); }
LayerStep adaptive_max_pool(AdaptivePoolOptions o) { return adaptive_step("adaptive_max_pool", std::move(o), false); }
LayerStep adaptive_lp_pool(AdaptivePoolOptions o) { return adaptive_step("adaptive_lp_pool", std::move(o), true); }

LayerStep global_lp_pool(double norm, GlobalPoolOptions o) {
  const std::string what =
      fmt::format("global_lp_pool (norm {}, keep_axes {}, channels {})", norm, o.keep_axes, layout_name(o.channels));
  check_norm(what, norm);
  return step(std::make_shared<FunctionPoolLayer>(
      "global_lp_pool", what, [o](const Shape& in) { return global_pool_output_shape(in, o.keep_axes, o.channels); },
      [o, norm](const Tensor& x) { return global_lp_pool(x, norm, o.keep_axes, o.channels); }));
}

Model bilinear(const Model& x1, const Model& x2, int64_t units, BilinearOptions options) {
  const Activation act = options.activation;
  Model out = Model::apply(std::make_shared<BilinearLayer>(units, std::move(options)), {x1, x2});
  return act == Activation::none ? out : out | activation(act);
}

}  // namespace axon
