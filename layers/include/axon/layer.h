// A layer is a pure function: given input shapes it declares its output shape and its parameters,
// and given input tensors and parameter tensors it computes its output. Layers hold only their
// options (units, activation, ...); parameters live outside, in axon::Parameters.
//
// Adding a layer family = subclassing Layer and writing a builder function (see model.h).
#pragma once

#include <functional>
#include <span>
#include <string>
#include <vector>

#include "axon/random.h"
#include "axon/tensor.h"

namespace axon {

// Makes a parameter's initial value. Shapes follow Axon (Elixir): a dense kernel is {in, out}.
using Initializer = std::function<Tensor(const Shape& shape, Generator& gen)>;

namespace initializers {
Initializer zeros();
Initializer ones();
Initializer full(float value);
Initializer uniform(float scale = 0.01f);                // U(-scale, scale)
Initializer normal(float mean = 0.0f, float stddev = 0.05f);
Initializer glorot_uniform(float scale = 1.0f);          // U(-l, l), l = sqrt(6 scale / (fan_in + fan_out))
Initializer glorot_normal(float scale = 1.0f);
Initializer he_uniform(float scale = 2.0f);              // U(-l, l), l = sqrt(3 scale / fan_in)
Initializer he_normal(float scale = 2.0f);
Initializer lecun_uniform(float scale = 1.0f);
Initializer lecun_normal(float scale = 1.0f);
// fan_in and fan_out of a shape: {in, out} for 2-d; receptive field multiplies both for n-d.
std::pair<double, double> fans(const Shape& shape);
}  // namespace initializers

struct ParamSpec {
  std::string name;  // within the layer: "kernel", "bias"
  Shape shape;
  Initializer init;
};

struct ForwardContext {
  bool training = false;
  Generator* rng = nullptr;  // for stochastic layers (dropout) in training mode
};

class Layer {
 public:
  virtual ~Layer() = default;
  // The op name used in layer names and the summary: "dense", "relu", ...
  virtual std::string op() const = 0;
  // Output shape from input shapes; the batch dimension is -1. Throws std::invalid_argument with a
  // message about the shapes (the model adds the layer's name).
  virtual Shape output_shape(const std::vector<Shape>& inputs) const = 0;
  virtual std::vector<ParamSpec> params(const std::vector<Shape>& /*inputs*/) const { return {}; }
  virtual Tensor forward(const std::vector<Tensor>& inputs, std::span<const Tensor> params,
                         const ForwardContext& ctx) const = 0;
};

enum class Activation { none, relu, sigmoid, tanh, softmax, log_softmax };

std::string activation_name(Activation activation);
Activation parse_activation(const std::string& name);  // throws on an unknown name
Tensor apply_activation(Activation activation, const Tensor& x);

// ---- built-in layers ----

class InputLayer : public Layer {
 public:
  explicit InputLayer(Shape shape) : shape_(std::move(shape)) {}
  std::string op() const override { return "input"; }
  Shape output_shape(const std::vector<Shape>&) const override { return shape_; }
  Tensor forward(const std::vector<Tensor>& inputs, std::span<const Tensor>, const ForwardContext&) const override;
  const Shape& shape() const { return shape_; }

 private:
  Shape shape_;  // -1 marks a dimension of any size (the batch)
};

class DenseLayer : public Layer {
 public:
  DenseLayer(int64_t units, bool use_bias, Initializer kernel_init, Initializer bias_init);
  std::string op() const override { return "dense"; }
  Shape output_shape(const std::vector<Shape>& inputs) const override;
  std::vector<ParamSpec> params(const std::vector<Shape>& inputs) const override;
  Tensor forward(const std::vector<Tensor>& inputs, std::span<const Tensor> params, const ForwardContext&) const override;

 private:
  int64_t units_;
  bool use_bias_;
  Initializer kernel_init_, bias_init_;
};

class ActivationLayer : public Layer {
 public:
  explicit ActivationLayer(Activation activation) : activation_(activation) {}
  std::string op() const override { return activation_name(activation_); }
  Shape output_shape(const std::vector<Shape>& inputs) const override;
  Tensor forward(const std::vector<Tensor>& inputs, std::span<const Tensor>, const ForwardContext&) const override;

 private:
  Activation activation_;
};

class FlattenLayer : public Layer {
 public:
  std::string op() const override { return "flatten"; }
  Shape output_shape(const std::vector<Shape>& inputs) const override;
  Tensor forward(const std::vector<Tensor>& inputs, std::span<const Tensor>, const ForwardContext&) const override;
};

}  // namespace axon
