#include "axon/layer.h"

#include <fmt/format.h>

#include <cmath>
#include <stdexcept>

#include "axon/activations.h"
#include "axon/nn_ops.h"
#include "axon/ops.h"

namespace axon {

// ---- activations ----

namespace {

using Kind = Activation::Kind;

constexpr std::pair<Kind, const char*> kActivationNames[] = {
    {Kind::linear, "linear"},       {Kind::celu, "celu"},
    {Kind::elu, "elu"},             {Kind::exp, "exp"},
    {Kind::gelu, "gelu"},           {Kind::gelu_tanh, "gelu_tanh"},
    {Kind::hard_sigmoid, "hard_sigmoid"}, {Kind::hard_silu, "hard_silu"},
    {Kind::hard_tanh, "hard_tanh"}, {Kind::leaky_relu, "leaky_relu"},
    {Kind::log_sigmoid, "log_sigmoid"}, {Kind::log_softmax, "log_softmax"},
    {Kind::log_sumexp, "log_sumexp"}, {Kind::mish, "mish"},
    {Kind::relu, "relu"},           {Kind::relu6, "relu6"},
    {Kind::selu, "selu"},           {Kind::sigmoid, "sigmoid"},
    {Kind::silu, "silu"},           {Kind::softmax, "softmax"},
    {Kind::softplus, "softplus"},   {Kind::softsign, "softsign"},
    {Kind::tanh, "tanh"},
};

std::string all_activation_names() {
  std::string names;
  for (const auto& [kind, name] : kActivationNames) names += (names.empty() ? "" : ", ") + std::string(name);
  return names + ", hard_swish";
}

bool has_alpha(Kind k) {
  return k == Kind::celu || k == Kind::elu || k == Kind::leaky_relu || k == Kind::selu || k == Kind::hard_sigmoid ||
         k == Kind::hard_silu;
}
bool has_beta(Kind k) { return k == Kind::selu || k == Kind::hard_sigmoid || k == Kind::hard_silu; }
bool has_axis(Kind k) { return k == Kind::softmax || k == Kind::log_softmax || k == Kind::log_sumexp; }

}  // namespace

std::string activation_name(Activation activation) {
  for (const auto& [kind, name] : kActivationNames)
    if (kind == activation.kind) return name;
  throw std::invalid_argument(fmt::format("unknown activation kind {}", static_cast<int>(activation.kind)));
}

Activation parse_activation(const std::string& name) {
  if (name == "hard_swish") return Activation::hard_swish;
  for (const auto& [kind, known] : kActivationNames)
    if (name == known) {
      for (const Activation& a :
           {Activation::linear, Activation::celu, Activation::elu, Activation::exp, Activation::gelu,
            Activation::gelu_tanh, Activation::hard_sigmoid, Activation::hard_silu, Activation::hard_tanh,
            Activation::leaky_relu, Activation::log_sigmoid, Activation::log_softmax, Activation::log_sumexp,
            Activation::mish, Activation::relu, Activation::relu6, Activation::selu, Activation::sigmoid,
            Activation::silu, Activation::softmax, Activation::softplus, Activation::softsign, Activation::tanh})
        if (a.kind == kind) return a;
    }
  throw std::invalid_argument(fmt::format("unknown activation '{}' (expected one of {})", name, all_activation_names()));
}

Activation Activation::with_alpha(double value) const {
  const std::string name = activation_name(*this);
  if (!has_alpha(kind)) throw std::invalid_argument(fmt::format("activation {} has no option alpha", name));
  if (!std::isfinite(value)) throw std::invalid_argument(fmt::format("activation {}: alpha must be finite, got {}", name, value));
  if (kind == Kind::celu && value == 0.0) throw std::invalid_argument("activation celu: alpha must be non-zero, got 0");
  Activation a = *this;
  a.alpha = value;
  return a;
}

Activation Activation::with_beta(double value) const {
  const std::string name = activation_name(*this);
  const char* option = kind == Kind::selu ? "gamma" : "beta";
  if (!has_beta(kind)) throw std::invalid_argument(fmt::format("activation {} has no option beta or gamma", name));
  if (!std::isfinite(value))
    throw std::invalid_argument(fmt::format("activation {}: {} must be finite, got {}", name, option, value));
  Activation a = *this;
  a.beta = value;
  return a;
}

Activation Activation::with_axis(int64_t value) const {
  if (!has_axis(kind))
    throw std::invalid_argument(fmt::format("activation {} has no option axis", activation_name(*this)));
  Activation a = *this;
  a.axis = value;
  return a;
}

Tensor apply_activation(Activation a, const Tensor& x) {
  switch (a.kind) {
    case Kind::linear: return x;
    case Kind::celu: return celu(x, a.alpha);
    case Kind::elu: return elu(x, a.alpha);
    case Kind::exp: return exp(x);
    case Kind::gelu: return gelu(x);
    case Kind::gelu_tanh: return gelu(x, GeluApproximation::tanh);
    case Kind::hard_sigmoid: return hard_sigmoid(x, a.alpha, a.beta);
    case Kind::hard_silu: return hard_silu(x, a.alpha, a.beta);
    case Kind::hard_tanh: return hard_tanh(x);
    case Kind::leaky_relu: return leaky_relu(x, a.alpha);
    case Kind::log_sigmoid: return log_sigmoid(x);
    case Kind::log_softmax: return log_softmax(x, a.axis);
    case Kind::log_sumexp: return log_sumexp(x, a.axis, true);
    case Kind::mish: return mish(x);
    case Kind::relu: return relu(x);
    case Kind::relu6: return relu6(x);
    case Kind::selu: return selu(x, a.alpha, a.beta);
    case Kind::sigmoid: return sigmoid(x);
    case Kind::silu: return silu(x);
    case Kind::softmax: return softmax(x, a.axis);
    case Kind::softplus: return softplus(x);
    case Kind::softsign: return softsign(x);
    case Kind::tanh: return tanh(x);
  }
  throw std::invalid_argument(fmt::format("unknown activation kind {}", static_cast<int>(a.kind)));
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
  if (!kernel_init_) throw std::invalid_argument(fmt::format("dense ({} units): kernel_initializer is empty", units));
  if (use_bias && !bias_init_) throw std::invalid_argument(fmt::format("dense ({} units): bias_initializer is empty", units));
}

Shape DenseLayer::output_shape(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, "dense");
  const Shape& in = inputs[0];
  if (in.size() < 2)
    throw std::invalid_argument(
        fmt::format("dense expects an input {{batch, ..., features}} of rank 2 or more, got {}", shape_str(in)));
  if (in.back() <= 0)
    throw std::invalid_argument(fmt::format("dense needs a known feature size, got input {}", shape_str(in)));
  Shape out = in;  // as the seed's dense: applied to the last axis, every other axis kept
  out.back() = units_;
  return out;
}

std::vector<ParamSpec> DenseLayer::params(const std::vector<Shape>& inputs) const {
  std::vector<ParamSpec> specs{{"kernel", {inputs.at(0).back(), units_}, kernel_init_}};
  if (use_bias_) specs.push_back({"bias", {units_}, bias_init_});
  return specs;
}

Tensor DenseLayer::forward(const std::vector<Tensor>& inputs, std::span<const Tensor> params, const ForwardContext&) const {
  const Tensor& x = inputs.at(0);
  if (x.dim() == 2) return linear(x, params[0], use_bias_ ? params[1] : Tensor());
  Shape out = x.shape();  // {batch, ..., features}: one GEMM over the flattened leading axes
  out.back() = units_;
  return linear(x.reshape({-1, x.size(-1)}), params[0], use_bias_ ? params[1] : Tensor()).reshape(out);
}

Shape ActivationLayer::output_shape(const std::vector<Shape>& inputs) const {
  const std::string op = activation_name(activation_);
  expect_inputs(inputs, 1, op.c_str());
  const Shape& in = inputs[0];
  if (activation_.kind == Kind::softmax || activation_.kind == Kind::log_softmax || activation_.kind == Kind::log_sumexp) {
    const int64_t dims = static_cast<int64_t>(in.size());
    const int64_t a = activation_.axis < 0 ? activation_.axis + dims : activation_.axis;
    if (a < 0 || a >= dims)
      throw std::invalid_argument(fmt::format("{} (axis {}): axis out of range for input shape {}", op, activation_.axis,
                                              shape_str(in)));
    if (activation_.kind == Kind::log_sumexp) {
      Shape out = in;
      out[a] = 1;  // the seed's keep_axes: true
      return out;
    }
  }
  return in;
}

Tensor ActivationLayer::forward(const std::vector<Tensor>& inputs, std::span<const Tensor>, const ForwardContext&) const {
  return apply_activation(activation_, inputs.at(0));
}

DropoutLayer::DropoutLayer(Kind kind, double rate, uint64_t seed, int64_t channel_index)
    : kind_(kind), rate_(rate), seed_(seed), channel_index_(channel_index) {
  if (!std::isfinite(rate) || rate < 0.0 || rate >= 1.0)
    throw std::invalid_argument(fmt::format("{}: rate must be in [0, 1), got {}", op(), rate));
}

std::string DropoutLayer::op() const {
  switch (kind_) {
    case Kind::dropout: return "dropout";
    case Kind::alpha_dropout: return "alpha_dropout";
    case Kind::spatial_dropout: return "spatial_dropout";
    case Kind::feature_alpha_dropout: return "feature_alpha_dropout";
  }
  return "dropout";
}

Shape DropoutLayer::output_shape(const std::vector<Shape>& inputs) const {
  const std::string name = op();
  expect_inputs(inputs, 1, name.c_str());
  const Shape& in = inputs[0];
  if (kind_ == Kind::spatial_dropout || kind_ == Kind::feature_alpha_dropout) {
    const int64_t dims = static_cast<int64_t>(in.size());
    const int64_t a = channel_index_ < 0 ? channel_index_ + dims : channel_index_;
    if (dims < 2 || a <= 0 || a >= dims)
      throw std::invalid_argument(fmt::format("{} (rate {}, channel_index {}): needs an input {{batch, ..., channels}} "
                                              "whose channel axis is not the batch axis, got {}",
                                              name, rate_, channel_index_, shape_str(in)));
  }
  return in;
}

Tensor DropoutLayer::forward(const std::vector<Tensor>& inputs, std::span<const Tensor>, const ForwardContext& ctx) const {
  const Tensor& x = inputs.at(0);
  if (!ctx.training || rate_ == 0.0) return x;
  if (!ctx.rng)
    throw std::invalid_argument(fmt::format(
        "{} (rate {}): training mode needs ForwardContext::rng, the generator masks are drawn from", op(), rate_));
  // The layer's seed option decorrelates two dropout layers' streams even from the same draw.
  const uint64_t seed = ctx.rng->next_u64() ^ (seed_ * 0xD1B54A32D192ED03ull);
  switch (kind_) {
    case Kind::dropout: return dropout(x, rate_, seed);
    case Kind::alpha_dropout: return alpha_dropout(x, rate_, seed);
    case Kind::spatial_dropout: return spatial_dropout(x, rate_, seed, channel_index_);
    case Kind::feature_alpha_dropout: return feature_alpha_dropout(x, rate_, seed, channel_index_);
  }
  return x;
}

NormLayer::NormLayer(bool rms, int64_t channel_index, double epsilon, double shift, Initializer gamma_init,
                     Initializer beta_init)
    : rms_(rms), channel_index_(channel_index), epsilon_(epsilon), shift_(shift), gamma_init_(std::move(gamma_init)),
      beta_init_(std::move(beta_init)) {
  if (!std::isfinite(epsilon) || epsilon < 0.0)
    throw std::invalid_argument(fmt::format("{}: epsilon must be finite and non-negative, got {}", op(), epsilon));
  if (!std::isfinite(shift)) throw std::invalid_argument(fmt::format("{}: shift must be finite, got {}", op(), shift));
  if (!gamma_init_) throw std::invalid_argument(fmt::format("{}: gamma_initializer is empty", op()));
  if (!rms && !beta_init_) throw std::invalid_argument("layer_norm: beta_initializer is empty");
}

std::string NormLayer::describe() const {
  return rms_ ? fmt::format("rms_norm (channel_index {}, epsilon {}, shift {})", channel_index_, epsilon_, shift_)
              : fmt::format("layer_norm (channel_index {}, epsilon {})", channel_index_, epsilon_);
}

int64_t NormLayer::channels(const Shape& in) const {
  const int64_t dims = static_cast<int64_t>(in.size());
  const int64_t a = channel_index_ < 0 ? channel_index_ + dims : channel_index_;
  if (a < 0 || a >= dims)
    throw std::invalid_argument(fmt::format("{}: channel_index out of range for input shape {}", describe(), shape_str(in)));
  if (a == 0) throw std::invalid_argument(fmt::format("{}: channel_index names the batch axis of input shape {}", describe(), shape_str(in)));
  if (in[a] <= 0)
    throw std::invalid_argument(fmt::format("{}: the channel axis of input shape {} must have a known size", describe(), shape_str(in)));
  return in[a];
}

Shape NormLayer::output_shape(const std::vector<Shape>& inputs) const {
  expect_inputs(inputs, 1, op().c_str());
  channels(inputs[0]);
  return inputs[0];
}

std::vector<ParamSpec> NormLayer::params(const std::vector<Shape>& inputs) const {
  const int64_t c = channels(inputs.at(0));
  std::vector<ParamSpec> specs{{"gamma", {c}, gamma_init_}};
  if (!rms_) specs.push_back({"beta", {c}, beta_init_});
  return specs;
}

Tensor NormLayer::forward(const std::vector<Tensor>& inputs, std::span<const Tensor> params, const ForwardContext&) const {
  if (rms_) return rms_norm(inputs.at(0), params[0], channel_index_, epsilon_, shift_);
  return layer_norm(inputs.at(0), params[0], params[1], channel_index_, epsilon_);
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
