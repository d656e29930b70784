// A layer is a pure function: given input shapes it declares its output shape and its parameters,
// and given input tensors and parameter tensors it computes its output. Layers hold only their
// options (units, activation, ...); parameters live outside, in axon::Parameters.
//
// Adding a layer family = subclassing Layer and writing a builder function (see model.h).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "axon/initializers.h"
#include "axon/random.h"
#include "axon/tensor.h"

namespace axon {

class Hooks;  // axon/hooks.h

struct ParamSpec {
  std::string name;  // within the layer: "kernel", "bias"
  Shape shape;
  Initializer init;
};

// How a forward pass runs. `training` selects train mode (dropout active, batch_norm on batch
// statistics, updating its running ones) or inference mode (predict()); the model's forward sets
// `state` for each layer to that layer's model state.
struct ForwardContext {
  bool training = false;
  Generator* rng = nullptr;  // for stochastic layers (dropout) in training mode
  // This layer's model state (Layer::state, in that order): views into the flat state buffer of
  // axon::Parameters, never requiring grad. Layers update them in place in training mode only.
  std::span<const Tensor> state = {};
  // The dtype and device of the model's inputs and parameters (set by the model's forward), for
  // layers without inputs (constant) to make their tensors on.
  TensorOptions options = {};
  // Hooks to run around each layer (axon/hooks.h); none when null. The model's forward runs
  // them; a layer never sees them.
  const Hooks* hooks = nullptr;
};

class Layer {
 public:
  virtual ~Layer() = default;
  // The op name used in layer names and the summary: "dense", "relu", ...
  virtual std::string op() const = 0;
  // Output shape from input shapes; the batch dimension is -1. Throws std::invalid_argument with a
  // message about the shapes (the model adds the layer's name).
  virtual Shape output_shape(const std::vector<Shape>& inputs) const = 0;
  // Layers of several outputs (lstm: the sequence and the state {c, h}) compute them packed in one
  // tensor (output_shape) that part layers cut up; this lists each output's shape for summary().
  virtual std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const { return {output_shape(inputs)}; }
  virtual std::vector<ParamSpec> params(const std::vector<Shape>& /*inputs*/) const { return {}; }
  // Model state from input shapes: non-trainable values that training updates and checkpoints
  // save (batch_norm's running mean and variance; the seed's parameters of kind :state). Kept in
  // Parameters beside the trainable parameters, in a flat buffer of their own that optimizers
  // never see; f32 (f64 for f64 parameters).
  virtual std::vector<ParamSpec> state(const std::vector<Shape>& /*inputs*/) const { return {}; }
  virtual Tensor forward(const std::vector<Tensor>& inputs, std::span<const Tensor> params,
                         const ForwardContext& ctx) const = 0;
  // Weight tying: the index of a graph input whose layer's parameters this layer uses as well (the
  // same tensors, so their gradients sum), or −1 (the default) for none. forward() then receives
  // that layer's parameters first, then its own. tied_dense uses it to share an embedding's kernel.
  virtual int shared_params_input() const { return -1; }
};

// An activation and its options: the `activation` option of dense (and of every later layer that
// takes one) and the ActivationLayer. The named constants carry the seed's defaults
// (shared/notes/axon-inventory.md §1); change an option with the with_* helpers:
//
//   dense(128, Activation::gelu)
//   dense(128, Activation::leaky_relu.with_alpha(0.2))
//
// The functions themselves, their formulas and references are in axon/activations.h and axon/ops.h.
struct Activation {
  enum class Kind : uint8_t {
    linear, celu, elu, exp, gelu, gelu_tanh, hard_sigmoid, hard_silu, hard_tanh, leaky_relu, log_sigmoid,
    log_softmax, log_sumexp, mish, relu, relu6, selu, sigmoid, silu, softmax, softplus, softsign, tanh
  };
  Kind kind = Kind::linear;
  double alpha = 0.0;  // celu, elu, leaky_relu, selu; hard_sigmoid and hard_silu: the slope
  double beta = 0.0;   // hard_sigmoid and hard_silu: the offset; selu: gamma (the scale)
  int64_t axis = -1;   // softmax, log_softmax, log_sumexp (log_sumexp keeps the axis, size 1)

  constexpr Activation() = default;
  constexpr Activation(Kind k, double a = 0.0, double b = 0.0, int64_t ax = -1) : kind(k), alpha(a), beta(b), axis(ax) {}
  // A copy with one option changed. Throws std::invalid_argument naming the activation when it
  // has no such option (relu has no alpha) or the value is invalid (celu's alpha 0, not finite).
  Activation with_alpha(double value) const;
  Activation with_beta(double value) const;
  Activation with_gamma(double value) const { return with_beta(value); }  // selu's scale
  Activation with_axis(int64_t value) const;
  bool operator==(const Activation&) const = default;

  static const Activation none;  // the same as linear: no activation
  static const Activation linear, celu, elu, exp, gelu, gelu_tanh, hard_sigmoid, hard_silu, hard_swish, hard_tanh,
      leaky_relu, log_sigmoid, log_softmax, log_sumexp, mish, relu, relu6, selu, sigmoid, silu, softmax, softplus,
      softsign, tanh;
};

inline constexpr Activation Activation::none{Kind::linear};
inline constexpr Activation Activation::linear{Kind::linear};
inline constexpr Activation Activation::celu{Kind::celu, 1.0};
inline constexpr Activation Activation::elu{Kind::elu, 1.0};
inline constexpr Activation Activation::exp{Kind::exp};
inline constexpr Activation Activation::gelu{Kind::gelu};
inline constexpr Activation Activation::gelu_tanh{Kind::gelu_tanh};
inline constexpr Activation Activation::hard_sigmoid{Kind::hard_sigmoid, 0.2, 0.2};
inline constexpr Activation Activation::hard_silu{Kind::hard_silu, 0.2, 0.2};
inline constexpr Activation Activation::hard_swish{Kind::hard_silu, 0.2, 0.2};
inline constexpr Activation Activation::hard_tanh{Kind::hard_tanh};
inline constexpr Activation Activation::leaky_relu{Kind::leaky_relu, 1.0e-2};
inline constexpr Activation Activation::log_sigmoid{Kind::log_sigmoid};
inline constexpr Activation Activation::log_softmax{Kind::log_softmax};
inline constexpr Activation Activation::log_sumexp{Kind::log_sumexp};
inline constexpr Activation Activation::mish{Kind::mish};
inline constexpr Activation Activation::relu{Kind::relu};
inline constexpr Activation Activation::relu6{Kind::relu6};
inline constexpr Activation Activation::selu{Kind::selu, 1.6732632423543772848170429916717,
                                             1.0507009873554804934193349852946};
inline constexpr Activation Activation::sigmoid{Kind::sigmoid};
inline constexpr Activation Activation::silu{Kind::silu};
inline constexpr Activation Activation::softmax{Kind::softmax};
inline constexpr Activation Activation::softplus{Kind::softplus};
inline constexpr Activation Activation::softsign{Kind::softsign};
inline constexpr Activation Activation::tanh{Kind::tanh};

// The name: "relu", "gelu_tanh", ... (linear for none; hard_swish is named hard_silu).
std::string activation_name(Activation activation);
// The activation of that name with the seed's defaults ("hard_swish" is hard_silu). Throws
// std::invalid_argument listing every name on an unknown one.
Activation parse_activation(const std::string& name);
// activation(x): element-wise ones keep x's shape; log_sumexp reduces its axis to size 1.
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
  int64_t units() const { return units_; }
  bool use_bias() const { return use_bias_; }

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

// dropout, alpha_dropout, spatial_dropout or feature_alpha_dropout (axon/nn_ops.h) in training
// mode; the identity otherwise. Each training forward draws the mask's seed from
// ForwardContext::rng (mixed with the layer's own seed option), so a run is reproducible from the
// trainer's seed. 0 ≤ rate < 1, checked when the layer is built; the channel axis of the
// per-channel kinds when the model is planned.
class DropoutLayer : public Layer {
 public:
  enum class Kind { dropout, alpha_dropout, spatial_dropout, feature_alpha_dropout };
  DropoutLayer(Kind kind, double rate, uint64_t seed, int64_t channel_index = -1);
  std::string op() const override;
  Shape output_shape(const std::vector<Shape>& inputs) const override;
  Tensor forward(const std::vector<Tensor>& inputs, std::span<const Tensor>, const ForwardContext& ctx) const override;

 private:
  Kind kind_;
  double rate_;
  uint64_t seed_;
  int64_t channel_index_;
};

// layer_norm (rms = false; params gamma, beta) or rms_norm (rms = true; param gamma) along the
// channel axis (axon/nn_ops.h).
class NormLayer : public Layer {
 public:
  NormLayer(bool rms, int64_t channel_index, double epsilon, double shift, Initializer gamma_init, Initializer beta_init);
  std::string op() const override { return rms_ ? "rms_norm" : "layer_norm"; }
  Shape output_shape(const std::vector<Shape>& inputs) const override;
  std::vector<ParamSpec> params(const std::vector<Shape>& inputs) const override;
  Tensor forward(const std::vector<Tensor>& inputs, std::span<const Tensor> params, const ForwardContext&) const override;

 private:
  int64_t channels(const Shape& in) const;  // the size of the channel axis; throws naming the options
  std::string describe() const;             // "layer_norm (channel_index -1, epsilon 1e-05)"
  bool rms_;
  int64_t channel_index_;
  double epsilon_, shift_;
  Initializer gamma_init_, beta_init_;
};

class FlattenLayer : public Layer {
 public:
  std::string op() const override { return "flatten"; }
  Shape output_shape(const std::vector<Shape>& inputs) const override;
  Tensor forward(const std::vector<Tensor>& inputs, std::span<const Tensor>, const ForwardContext&) const override;
};

}  // namespace axon
