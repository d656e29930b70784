#include "axon/layer.h"

#include <fmt/format.h>

#include <cmath>
#include <stdexcept>

#include "axon/ops.h"

namespace axon {

// ---- initializers ----

namespace initializers {

std::pair<double, double> fans(const Shape& shape) {
  if (shape.empty()) return {1.0, 1.0};
  if (shape.size() == 1) return {static_cast<double>(shape[0]), static_cast<double>(shape[0])};
  // {..., in, out}: leading dims form the receptive field (conv kernels).
  double receptive = 1.0;
  for (size_t i = 0; i + 2 < shape.size(); ++i) receptive *= static_cast<double>(shape[i]);
  const double in = static_cast<double>(shape[shape.size() - 2]);
  const double out = static_cast<double>(shape[shape.size() - 1]);
  return {in * receptive, out * receptive};
}

Initializer zeros() { return full(0.0f); }
Initializer ones() { return full(1.0f); }
Initializer full(float value) {
  return [value](const Shape& shape, Generator&) { return Tensor::full(shape, value); };
}
Initializer uniform(float scale) {
  return [scale](const Shape& shape, Generator& gen) { return axon::uniform(shape, -scale, scale, gen); };
}
Initializer normal(float mean, float stddev) {
  return [mean, stddev](const Shape& shape, Generator& gen) { return axon::normal(shape, mean, stddev, gen); };
}

namespace {
// Variance scaling: limit or stddev from scale / (fan_in, fan_out or their mean).
enum class FanMode { in, avg };
Initializer variance_scaling(float scale, FanMode mode, bool uniform_dist) {
  return [=](const Shape& shape, Generator& gen) {
    auto [fan_in, fan_out] = fans(shape);
    const double denom = mode == FanMode::in ? fan_in : (fan_in + fan_out) / 2.0;
    const double variance = scale / std::max(1.0, denom);
    if (uniform_dist) {
      const float limit = static_cast<float>(std::sqrt(3.0 * variance));
      return axon::uniform(shape, -limit, limit, gen);
    }
    return axon::normal(shape, 0.0f, static_cast<float>(std::sqrt(variance)), gen);
  };
}
}  // namespace

// glorot: variance = scale * 2 / (fan_in + fan_out), i.e. limit sqrt(6 scale / (fan_in + fan_out)).
Initializer glorot_uniform(float scale) { return variance_scaling(scale, FanMode::avg, true); }
Initializer glorot_normal(float scale) { return variance_scaling(scale, FanMode::avg, false); }
Initializer he_uniform(float scale) { return variance_scaling(scale, FanMode::in, true); }
Initializer he_normal(float scale) { return variance_scaling(scale, FanMode::in, false); }
Initializer lecun_uniform(float scale) { return variance_scaling(scale, FanMode::in, true); }
Initializer lecun_normal(float scale) { return variance_scaling(scale, FanMode::in, false); }

}  // namespace initializers

// ---- activations ----

std::string activation_name(Activation activation) {
  switch (activation) {
    case Activation::none: return "linear";
    case Activation::relu: return "relu";
    case Activation::sigmoid: return "sigmoid";
    case Activation::tanh: return "tanh";
    case Activation::softmax: return "softmax";
    case Activation::log_softmax: return "log_softmax";
  }
  throw std::invalid_argument("unknown activation");
}

Activation parse_activation(const std::string& name) {
  for (Activation a : {Activation::none, Activation::relu, Activation::sigmoid, Activation::tanh,
                       Activation::softmax, Activation::log_softmax})
    if (activation_name(a) == name) return a;
  throw std::invalid_argument(fmt::format(
      "unknown activation '{}' (expected linear, relu, sigmoid, tanh, softmax or log_softmax)", name));
}

Tensor apply_activation(Activation activation, const Tensor& x) {
  switch (activation) {
    case Activation::none: return x;
    case Activation::relu: return relu(x);
    case Activation::sigmoid: return sigmoid(x);
    case Activation::tanh: return tanh(x);
    case Activation::softmax: return softmax(x, -1);
    case Activation::log_softmax: return log_softmax(x, -1);
  }
  throw std::invalid_argument("unknown activation");
}

// ---- layers ----

namespace {
void expect_inputs(const std::vector<Shape>& inputs, size_t n, const char* op) {
  if (inputs.size() != n)
    throw std::invalid_argument(fmt::format("{} takes {} input(s), got {}", op, n, inputs.size()));
}
}  // namespace

Tensor InputLayer::forward(const std::vector<Tensor>& inputs, std::span<const Tensor>, const ForwardContext&) const {
  return inputs.at(0);
}

DenseLayer::DenseLayer(int64_t units, bool use_bias, Initializer kernel_init, Initializer bias_init)
    : units_(units), use_bias_(use_bias), kernel_init_(std::move(kernel_init)), bias_init_(std::move(bias_init)) {
  if (units <= 0) throw std::invalid_argument(fmt::format("dense: units must be positive, got {}", units));
}

Shape DenseLayer::output_shape(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, "dense");
  const Shape& in = inputs[0];
  if (in.size() != 2)
    throw std::invalid_argument(fmt::format("dense expects a 2-d input {{batch, features}}, got {}", shape_str(in)));
  if (in[1] <= 0)
    throw std::invalid_argument(fmt::format("dense needs a known feature size, got input {}", shape_str(in)));
  return {in[0], units_};
}

std::vector<ParamSpec> DenseLayer::params(const std::vector<Shape>& inputs) const {
  std::vector<ParamSpec> specs{{"kernel", {inputs.at(0).at(1), units_}, kernel_init_}};
  if (use_bias_) specs.push_back({"bias", {units_}, bias_init_});
  return specs;
}

Tensor DenseLayer::forward(const std::vector<Tensor>& inputs, std::span<const Tensor> params, const ForwardContext&) const {
  return linear(inputs.at(0), params[0], use_bias_ ? params[1] : Tensor());
}

Shape ActivationLayer::output_shape(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, "activation");
  return inputs[0];
}

Tensor ActivationLayer::forward(const std::vector<Tensor>& inputs, std::span<const Tensor>, const ForwardContext&) const {
  return apply_activation(activation_, inputs.at(0));
}

Shape FlattenLayer::output_shape(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, "flatten");
  const Shape& in = inputs[0];
  if (in.empty()) throw std::invalid_argument("flatten needs at least a batch dimension");
  int64_t features = 1;
  for (size_t i = 1; i < in.size(); ++i) {
    if (in[i] < 0) throw std::invalid_argument(fmt::format("flatten needs known non-batch dimensions, got {}", shape_str(in)));
    features *= in[i];
  }
  return {in[0], features};
}

Tensor FlattenLayer::forward(const std::vector<Tensor>& inputs, std::span<const Tensor>, const ForwardContext&) const {
  const Tensor& x = inputs.at(0);
  return x.reshape({x.size(0), -1});
}

}  // namespace axon
