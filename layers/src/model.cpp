#include "axon/model.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <stdexcept>
#include <unordered_map>

#include "axon/autograd.h"
#include "axon/hooks.h"

namespace axon {

// ---- building ----

Model Model::apply(std::shared_ptr<const Layer> layer, const std::vector<Model>& inputs) {
  auto node = std::make_shared<ModelNode>();
  node->layer = std::move(layer);
  for (const Model& m : inputs) {
    if (!m.defined()) throw std::invalid_argument("model: a layer was applied to an empty model");
    node->inputs.push_back(m.output());
  }
  return Model(std::move(node));
}

Model input(Shape shape) {
  if (shape.empty()) throw std::invalid_argument("input: the shape needs at least one dimension");
  for (int64_t d : shape)
    if (d < -1 || d == 0) throw std::invalid_argument("input: dimensions must be positive or -1 (any), got " + shape_str(shape));
  return Model::apply(std::make_shared<InputLayer>(std::move(shape)), {});
}

static LayerStep single(std::shared_ptr<const Layer> layer) {
  return {[layer](const Model& m) { return Model::apply(layer, {m}); }};
}

LayerStep dense(int64_t units, Activation act) {
  DenseOptions options;
  options.activation = act;
  return dense(units, std::move(options));
}

LayerStep dense(int64_t units, DenseOptions options) {
  auto layer = std::make_shared<DenseLayer>(units, options.use_bias, options.kernel_initializer, options.bias_initializer);
  Activation act = options.activation;
  // As in Elixir's Axon, an activation option becomes a layer of its own.
  return {[layer, act](const Model& m) {
    Model out = Model::apply(layer, {m});
    return act == Activation::none ? out : out | activation(act);
  }};
}

LayerStep activation(Activation act) { return single(std::make_shared<ActivationLayer>(act)); }
LayerStep celu(double alpha) { return activation(Activation::celu.with_alpha(alpha)); }
LayerStep elu(double alpha) { return activation(Activation::elu.with_alpha(alpha)); }
LayerStep exp() { return activation(Activation::exp); }
LayerStep gelu(GeluApproximation approximate) {
  return activation(approximate == GeluApproximation::tanh ? Activation::gelu_tanh : Activation::gelu);
}
LayerStep hard_sigmoid(double alpha, double beta) {
  return activation(Activation::hard_sigmoid.with_alpha(alpha).with_beta(beta));
}
LayerStep hard_silu(double alpha, double beta) { return activation(Activation::hard_silu.with_alpha(alpha).with_beta(beta)); }
LayerStep hard_swish(double alpha, double beta) { return hard_silu(alpha, beta); }
LayerStep hard_tanh() { return activation(Activation::hard_tanh); }
LayerStep leaky_relu(double alpha) { return activation(Activation::leaky_relu.with_alpha(alpha)); }
LayerStep log_sigmoid() { return activation(Activation::log_sigmoid); }
LayerStep log_softmax(int64_t axis) { return activation(Activation::log_softmax.with_axis(axis)); }
LayerStep log_sumexp(int64_t axis) { return activation(Activation::log_sumexp.with_axis(axis)); }
LayerStep mish() { return activation(Activation::mish); }
LayerStep relu() { return activation(Activation::relu); }
LayerStep relu6() { return activation(Activation::relu6); }
LayerStep selu(double alpha, double gamma) { return activation(Activation::selu.with_alpha(alpha).with_gamma(gamma)); }
LayerStep sigmoid() { return activation(Activation::sigmoid); }
LayerStep silu() { return activation(Activation::silu); }
LayerStep softmax(int64_t axis) { return activation(Activation::softmax.with_axis(axis)); }
LayerStep softplus() { return activation(Activation::softplus); }
LayerStep softsign() { return activation(Activation::softsign); }
LayerStep tanh() { return activation(Activation::tanh); }
LayerStep flatten() { return single(std::make_shared<FlattenLayer>()); }
LayerStep dropout(double rate) { return dropout(DropoutOptions{rate, 0, -1}); }
static LayerStep dropout_step(DropoutLayer::Kind kind, const DropoutOptions& o) {
  return single(std::make_shared<DropoutLayer>(kind, o.rate, o.seed, o.channel_index));
}
LayerStep dropout(DropoutOptions o) { return dropout_step(DropoutLayer::Kind::dropout, o); }
LayerStep alpha_dropout(DropoutOptions o) { return dropout_step(DropoutLayer::Kind::alpha_dropout, o); }
LayerStep spatial_dropout(DropoutOptions o) { return dropout_step(DropoutLayer::Kind::spatial_dropout, o); }
LayerStep feature_alpha_dropout(DropoutOptions o) { return dropout_step(DropoutLayer::Kind::feature_alpha_dropout, o); }
LayerStep layer_norm(LayerNormOptions o) {
  return single(std::make_shared<NormLayer>(false, o.channel_index, o.epsilon, 0.0, o.gamma_initializer, o.beta_initializer));
}
LayerStep rms_norm(RmsNormOptions o) {
  return single(std::make_shared<NormLayer>(true, o.channel_index, o.epsilon, o.shift, o.gamma_initializer, Initializer()));
}

// ---- planning ----

namespace {

std::string layer_label(const PlannedLayer& l) { return fmt::format("{} ({})", l.name, l.node->layer->op()); }

// Shapes print like Elixir's tuples: the batch dimension (-1) is nil.
std::string model_shape_str(const Shape& shape) {
  std::string s = "{";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += shape[i] < 0 ? std::string("nil") : std::to_string(shape[i]);
  }
  return s + "}";
}

bool shape_fits(const Shape& declared, const Shape& actual) {
  if (declared.size() != actual.size()) return false;
  for (size_t i = 0; i < declared.size(); ++i)
    if (declared[i] != -1 && declared[i] != actual[i]) return false;
  return true;
}

}  // namespace

ModelPlan plan(const Model& model, const Shape& input_shape) {
  if (!model.defined()) throw std::invalid_argument("model: empty model");
  ModelPlan result;
  std::unordered_map<const ModelNode*, size_t> index;

  // Post-order DFS: every layer comes after its inputs; input order decides the numbering.
  struct Frame {
    const ModelNode* node;
    size_t next;
  };
  std::vector<Frame> stack{{model.output().get(), 0}};
  std::unordered_map<const ModelNode*, bool> on_stack{{model.output().get(), true}};
  while (!stack.empty()) {
    Frame& f = stack.back();
    if (f.next < f.node->inputs.size()) {
      const ModelNode* child = f.node->inputs[f.next++].get();
      if (index.count(child)) continue;
      if (on_stack[child]) throw std::invalid_argument("model: the layer graph has a cycle");
      on_stack[child] = true;
      stack.push_back({child, 0});  // invalidates f
      continue;
    }
    const ModelNode* node = f.node;
    stack.pop_back();
    on_stack[node] = false;
    PlannedLayer layer;
    layer.node = node;
    for (const auto& in : node->inputs) layer.inputs.push_back(index.at(in.get()));
    index[node] = result.layers.size();
    result.layers.push_back(std::move(layer));
  }

  // Names, with one counter over the whole model, and the input layers with their declared shapes.
  for (size_t i = 0; i < result.layers.size(); ++i) {
    PlannedLayer& layer = result.layers[i];
    layer.name = fmt::format("{}_{}", layer.node->layer->op(), i + 1);
    if (auto* in = dynamic_cast<const InputLayer*>(layer.node->layer.get())) {
      result.input_layers.push_back(i);
      layer.output_shape = in->shape();
    }
  }

  // A concrete input shape replaces the declared one, so every shape (and any error) is concrete.
  if (!input_shape.empty()) {
    if (result.input_layers.size() != 1)
      throw std::invalid_argument(fmt::format("model: an input shape was given but the model has {} inputs",
                                              result.input_layers.size()));
    PlannedLayer& in = result.layers[result.input_layers[0]];
    if (!shape_fits(in.output_shape, input_shape))
      throw std::invalid_argument(fmt::format("{}: input of shape {} does not fit the declared shape {}", layer_label(in),
                                              shape_str(input_shape), model_shape_str(in.output_shape)));
    in.output_shape = input_shape;
  }

  // Shapes and parameters, from the inputs forward.
  size_t param_index = 0, state_index = 0;
  for (size_t i = 0; i < result.layers.size(); ++i) {
    PlannedLayer& layer = result.layers[i];
    const bool is_input = std::find(result.input_layers.begin(), result.input_layers.end(), i) != result.input_layers.end();
    if (!is_input) {
      std::vector<Shape> in_shapes;
      for (size_t j : layer.inputs) in_shapes.push_back(result.layers[j].output_shape);
      try {
        layer.output_shape = layer.node->layer->output_shape(in_shapes);
        layer.params = layer.node->layer->params(in_shapes);
        layer.state = layer.node->layer->state(in_shapes);
        const int shared = layer.node->layer->shared_params_input();
        if (shared >= 0) {
          if (static_cast<size_t>(shared) >= layer.inputs.size())
            throw std::invalid_argument(fmt::format("shares the parameters of input {} but has {} inputs", shared,
                                                    layer.inputs.size()));
          layer.shares_params_of = layer.inputs[static_cast<size_t>(shared)];
        }
      } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(fmt::format("{}: {}", layer_label(layer), e.what()));
      }
    }
    layer.first_param = param_index;
    param_index += layer.params.size();
    layer.first_state = state_index;
    state_index += layer.state.size();
  }
  return result;
}

// ---- parameters ----

Parameters::Parameters(const std::vector<std::pair<std::string, Shape>>& layout, Device device, DType dtype,
                       const std::vector<std::pair<std::string, Shape>>& state_layout)
    : device_(device), dtype_(dtype) {
  if (!is_floating(dtype))
    throw std::invalid_argument(fmt::format("parameters: dtype {} cannot be trained (f32, f64 or bf16)", dtype_name(dtype)));
  for (const auto& [name, shape] : layout) total_ += static_cast<size_t>(shape_numel(shape));
  values_ = std::make_shared<Storage>(total_ * dtype_size(dtype), device);
  grads_ = std::make_shared<Storage>(total_ * dtype_size(dtype), device);
  flat_values().fill(0.0);
  flat_grads().fill(0.0);
  size_t offset = 0;
  for (const auto& [name, shape] : layout) {
    if (index_.count(name)) throw std::invalid_argument("parameters: duplicate name " + name);
    Tensor value = Tensor::view_of(values_, offset, shape, dtype);
    value.set_requires_grad(true);
    value.set_grad(Tensor::view_of(grads_, offset, shape, dtype));
    index_[name] = entries_.size();
    entries_.push_back({name, value});
    offset += static_cast<size_t>(shape_numel(shape));
  }
  if (state_layout.empty()) return;
  const DType sd = state_dtype();
  for (const auto& [name, shape] : state_layout) state_total_ += static_cast<size_t>(shape_numel(shape));
  state_ = std::make_shared<Storage>(state_total_ * dtype_size(sd), device);
  flat_state().fill(0.0);
  offset = 0;
  for (const auto& [name, shape] : state_layout) {
    if (state_index_.count(name) || index_.count(name)) throw std::invalid_argument("parameters: duplicate name " + name);
    state_index_[name] = state_entries_.size();
    state_entries_.push_back({name, Tensor::view_of(state_, offset, shape, sd)});
    offset += static_cast<size_t>(shape_numel(shape));
  }
}

const Tensor& Parameters::state(const std::string& name) const {
  auto it = state_index_.find(name);
  if (it == state_index_.end()) throw std::out_of_range("parameters: no model state named '" + name + "'");
  return state_entries_[it->second].value;
}

Tensor Parameters::flat_state() const {
  return state_ ? Tensor::view_of(state_, 0, {static_cast<int64_t>(state_total_)}, state_dtype())
                : Tensor::empty({0}, {state_dtype(), device_});
}

void Parameters::share_state(const Parameters& other) {
  bool same = other.state_entries_.size() == state_entries_.size() && other.device_ == device_ &&
              other.state_dtype() == state_dtype();
  for (size_t i = 0; same && i < state_entries_.size(); ++i)
    same = other.state_entries_[i].name == state_entries_[i].name &&
           other.state_entries_[i].value.shape() == state_entries_[i].value.shape();
  if (!same)
    throw std::invalid_argument(fmt::format("parameters: cannot share the model state of parameters with another state "
                                            "layout ({} entries {} on {} there, {} entries {} on {} here)",
                                            other.state_entries_.size(), dtype_name(other.state_dtype()),
                                            other.device_.str(), state_entries_.size(), dtype_name(state_dtype()),
                                            device_.str()));
  state_ = other.state_;
  state_entries_ = other.state_entries_;
}

const Tensor& Parameters::operator[](const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw std::out_of_range("parameters: no parameter named '" + name + "'");
  return entries_[it->second].value;
}

void Parameters::check_host(const char* what) const {
  if (!device_.is_cpu() || dtype_ != DType::f32)
    throw std::logic_error(fmt::format("parameters: {}() gives host f32 memory, but the parameters are {} on {} (use flat_{}())",
                                       what, dtype_name(dtype_), device_.str(), what));
}

std::span<float> Parameters::values() {
  check_host("values");
  return {values_ ? values_->as<float>() : nullptr, total_};
}
std::span<const float> Parameters::values() const {
  check_host("values");
  return {values_ ? values_->as<float>() : nullptr, total_};
}
std::span<float> Parameters::grads() {
  check_host("grads");
  return {grads_ ? grads_->as<float>() : nullptr, total_};
}
std::span<const float> Parameters::grads() const {
  check_host("grads");
  return {grads_ ? grads_->as<float>() : nullptr, total_};
}

Tensor Parameters::flat_values() const {
  return values_ ? Tensor::view_of(values_, 0, {static_cast<int64_t>(total_)}, dtype_) : Tensor::empty({0}, {dtype_, device_});
}
Tensor Parameters::flat_grads() const {
  return grads_ ? Tensor::view_of(grads_, 0, {static_cast<int64_t>(total_)}, dtype_) : Tensor::empty({0}, {dtype_, device_});
}

void Parameters::zero_grad() {
  if (grads_) flat_grads().fill(0.0);
}

Parameters Parameters::to(Device device, DType dtype) const {
  std::vector<std::pair<std::string, Shape>> layout;
  for (const Entry& e : entries_) layout.emplace_back(e.name, e.value.shape());
  std::vector<std::pair<std::string, Shape>> state_layout;
  for (const Entry& e : state_entries_) state_layout.emplace_back(e.name, e.value.shape());
  Parameters copy(layout, device, dtype, state_layout);
  copy.flat_values().copy_from(flat_values().to(dtype).to(device));
  copy.flat_grads().copy_from(flat_grads().to(dtype).to(device));
  if (state_total_ > 0) copy.flat_state().copy_from(flat_state().to(copy.state_dtype()).to(device));
  copy.freeze([&](const std::string& name) { return frozen(name); });
  return copy;
}

Parameters Parameters::to(Device device) const { return to(device, dtype_); }

size_t Parameters::freeze(const std::function<bool(const std::string&)>& select) {
  if (frozen_.empty()) frozen_.assign(entries_.size(), false);
  size_t changed = 0;
  for (size_t i = 0; i < entries_.size(); ++i)
    if (!frozen_[i] && select(entries_[i].name)) {
      frozen_[i] = true;
      entries_[i].value.set_requires_grad(false);  // backward then skips its gradient
      ++changed;
    }
  return changed;
}

size_t Parameters::unfreeze(const std::function<bool(const std::string&)>& select) {
  size_t changed = 0;
  for (size_t i = 0; i < frozen_.size(); ++i)
    if (frozen_[i] && select(entries_[i].name)) {
      frozen_[i] = false;
      entries_[i].value.set_requires_grad(true);
      ++changed;
    }
  return changed;
}

bool Parameters::frozen(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw std::out_of_range("parameters: no parameter named '" + name + "'");
  return frozen(it->second);
}

std::vector<std::string> Parameters::frozen_names() const {
  std::vector<std::string> names;
  for (size_t i = 0; i < frozen_.size(); ++i)
    if (frozen_[i]) names.push_back(entries_[i].name);
  return names;
}
Parameters Parameters::clone() const { return to(device_, dtype_); }

// ---- init ----

static Parameters init_from_plan(const ModelPlan& p, uint64_t seed) {
  std::vector<std::pair<std::string, Shape>> layout, state_layout;
  for (const PlannedLayer& layer : p.layers) {
    for (const ParamSpec& spec : layer.params) layout.emplace_back(layer.name + "." + spec.name, spec.shape);
    for (const ParamSpec& spec : layer.state) state_layout.emplace_back(layer.name + "." + spec.name, spec.shape);
  }
  Parameters params(layout, Device::cpu(), DType::f32, state_layout);
  Generator gen(seed);
  size_t k = 0;
  for (const PlannedLayer& layer : p.layers)
    for (const ParamSpec& spec : layer.params) {
      const std::string name = layer.name + "." + spec.name;
      if (!spec.init) throw std::invalid_argument(fmt::format("init: {} has no initializer", name));
      Tensor value;
      try {
        value = spec.init(spec.shape, gen);
      } catch (const std::exception& e) {
        throw std::invalid_argument(fmt::format("init: {} (shape {}): {}", name, shape_str(spec.shape), e.what()));
      }
      if (!value.defined() || value.shape() != spec.shape)
        throw std::invalid_argument(fmt::format("init: the initializer of {} returned shape {}, expected {}", name,
                                                value.defined() ? shape_str(value.shape()) : std::string("(undefined)"),
                                                shape_str(spec.shape)));
      // A custom initializer may return another floating dtype or device: converted here.
      if (value.dtype() != params.dtype()) value = value.to(params.dtype());
      if (value.device() != params.device()) value = value.to(params.device());
      params.at(k++).detach().copy_from(value);
    }
  // Model state after every parameter, so adding a stateful layer leaves the parameter draws of a
  // seed unchanged. State initializers are deterministic (zeros, ones) but get the generator too.
  k = 0;
  for (const PlannedLayer& layer : p.layers)
    for (const ParamSpec& spec : layer.state) {
      const std::string name = layer.name + "." + spec.name;
      Tensor value = spec.init ? spec.init(spec.shape, gen) : Tensor();
      if (!value.defined() || value.shape() != spec.shape)
        throw std::invalid_argument(fmt::format("init: the initializer of model state {} returned shape {}, expected {}",
                                                name, value.defined() ? shape_str(value.shape()) : std::string("(none)"),
                                                shape_str(spec.shape)));
      Tensor dst = params.state_entries()[k++].value;
      dst.copy_from(value.to(dst.dtype()).to(dst.device()));
    }
  return params;
}

Parameters init(const Model& model, uint64_t seed) { return init_from_plan(plan(model), seed); }

Parameters init(const Model& model, const Shape& input_shape, uint64_t seed) {
  return init_from_plan(plan(model, input_shape), seed);
}

// ---- running ----

Tensor forward(const ModelPlan& p, const Parameters& params, const std::vector<Tensor>& model_inputs,
               const ForwardContext& ctx) {
  if (p.input_layers.size() != model_inputs.size())
    throw std::invalid_argument(fmt::format("model: forward with {} input(s), but the model has {} (in the order of "
                                            "ModelPlan::input_layers)",
                                            model_inputs.size(), p.input_layers.size()));
  size_t expected = p.layers.empty() ? 0 : p.layers.back().first_param + p.layers.back().params.size();
  if (params.size() != expected)
    throw std::invalid_argument(fmt::format("model: the parameters hold {} tensors but the model needs {} (were they made "
                                            "by init() of this model?)", params.size(), expected));
  const size_t expected_state = p.layers.empty() ? 0 : p.layers.back().first_state + p.layers.back().state.size();
  if (params.state_entries().size() != expected_state)
    throw std::invalid_argument(fmt::format("model: the parameters hold {} model state tensors but the model needs {} "
                                            "(were they made by init() of this model?)",
                                            params.state_entries().size(), expected_state));

  const Hooks* hooks = ctx.hooks && !ctx.hooks->empty() ? ctx.hooks : nullptr;
  if (hooks) {
    std::vector<std::string> names;
    for (const PlannedLayer& layer : p.layers) names.push_back(layer.name);
    hooks->check_layers(names);
  }
  std::vector<Tensor> outputs(p.layers.size());
  std::vector<Tensor> layer_params, layer_state;
  ForwardContext layer_ctx = ctx;
  layer_ctx.hooks = nullptr;
  if (!model_inputs.empty() && model_inputs[0].defined()) layer_ctx.options = model_inputs[0].options();
  layer_ctx.options.device = params.device();
  for (size_t i = 0; i < p.layers.size(); ++i) {
    const PlannedLayer& layer = p.layers[i];
    std::vector<Tensor> inputs;
    const auto which = std::find(p.input_layers.begin(), p.input_layers.end(), i);
    if (which != p.input_layers.end()) {
      const Tensor& input = model_inputs[static_cast<size_t>(which - p.input_layers.begin())];
      if (!input.defined() || !shape_fits(layer.output_shape, input.shape()))
        throw std::invalid_argument(fmt::format("{}: input of shape {} does not fit the declared shape {}",
                                                layer_label(layer), input.defined() ? shape_str(input.shape()) : "(none)",
                                                model_shape_str(layer.output_shape)));
      inputs.push_back(input);
    }
    for (size_t j : layer.inputs) inputs.push_back(outputs[j]);

    layer_params.clear();
    if (layer.shares_params_of != SIZE_MAX) {  // weight tying: the owner's tensors, checked when it ran
      const PlannedLayer& owner = p.layers[layer.shares_params_of];
      for (size_t k = 0; k < owner.params.size(); ++k) layer_params.push_back(params.entries()[owner.first_param + k].value);
    }
    for (size_t k = 0; k < layer.params.size(); ++k) {
      const Parameters::Entry& entry = params.entries()[layer.first_param + k];
      const ParamSpec& spec = layer.params[k];
      const std::string expected_name = layer.name + "." + spec.name;
      if (entry.name != expected_name || entry.value.shape() != spec.shape)
        throw std::invalid_argument(fmt::format("{}: needs parameter {} of shape {}, got {} of shape {}", layer_label(layer),
                                                expected_name, shape_str(spec.shape), entry.name,
                                                shape_str(entry.value.shape())));
      layer_params.push_back(entry.value);
    }
    layer_state.clear();
    for (size_t k = 0; k < layer.state.size(); ++k) {
      const std::string expected_name = layer.name + "." + layer.state[k].name;
      const size_t at = layer.first_state + k;
      if (at >= params.state_entries().size() || params.state_entries()[at].name != expected_name ||
          params.state_entries()[at].value.shape() != layer.state[k].shape)
        throw std::invalid_argument(fmt::format("{}: needs model state {} of shape {}, the parameters have {}",
                                                layer_label(layer), expected_name, shape_str(layer.state[k].shape),
                                                at < params.state_entries().size()
                                                    ? params.state_entries()[at].name + " of shape " +
                                                          shape_str(params.state_entries()[at].value.shape())
                                                    : std::string("none")));
      layer_state.push_back(params.state_entries()[at].value);
    }
    layer_ctx.state = layer_state;
    if (hooks) hooks->run(layer.name, HookEvent::pre_forward, ctx.training, inputs);
    try {
      outputs[i] = layer.node->layer->forward(inputs, layer_params, layer_ctx);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(fmt::format("{}: {}", layer_label(layer), e.what()));
    }
    if (hooks) {
      hooks->run(layer.name, HookEvent::forward, ctx.training, {outputs[i]});
      outputs[i] = hooks->wrap_for_backward(layer.name, ctx.training, outputs[i]);
    }
  }
  return outputs.back();
}

Tensor forward(const ModelPlan& p, const Parameters& params, const Tensor& input, const ForwardContext& ctx) {
  return forward(p, params, std::vector<Tensor>{input}, ctx);
}

Tensor forward(const Model& model, const Parameters& params, const Tensor& input, const ForwardContext& ctx) {
  return forward(plan(model), params, input, ctx);
}

Tensor predict(const Model& model, const Parameters& params, const Tensor& input) {
  NoGradGuard no_grad;
  return forward(plan(model), params, input, ForwardContext{});
}

Tensor predict(const Model& model, const Parameters& params, const std::vector<Tensor>& inputs) {
  NoGradGuard no_grad;
  return forward(plan(model), params, inputs, ForwardContext{});
}

// ---- summary ----

std::string summary(const Model& model) {
  ModelPlan p = plan(model);
  std::vector<std::array<std::string, 3>> rows{{"Layer", "Shape", "Parameters"}};
  int64_t total = 0;
  for (const PlannedLayer& layer : p.layers) {
    // As the seed's table, a layer's count includes its model state (kind :state parameters).
    int64_t count = 0;
    for (const ParamSpec& spec : layer.params) count += shape_numel(spec.shape);
    for (const ParamSpec& spec : layer.state) count += shape_numel(spec.shape);
    total += count;
    // A multi-output layer (lstm) prints every output: "{nil, 10, 32}, {nil, 32}, {nil, 32}".
    std::string shape = model_shape_str(layer.output_shape);
    if (!layer.inputs.empty()) {
      std::vector<Shape> in_shapes;
      for (size_t j : layer.inputs) in_shapes.push_back(p.layers[j].output_shape);
      const std::vector<Shape> outs = layer.node->layer->output_shapes(in_shapes);
      if (outs.size() > 1) {
        shape.clear();
        for (const Shape& s : outs) shape += (shape.empty() ? "" : ", ") + model_shape_str(s);
      }
    }
    rows.push_back({layer_label(layer), shape, std::to_string(count)});
  }
  size_t w0 = 0, w1 = 0;
  for (const auto& r : rows) {
    w0 = std::max(w0, r[0].size());
    w1 = std::max(w1, r[1].size());
  }
  std::string out;
  for (const auto& r : rows) out += fmt::format(" {:<{}}{:<{}}{}\n", r[0], w0 + 3, r[1], w1 + 3, r[2]);
  // The seed's footer (Axon.Display.as_table): the total and its size at 32 bits per value, in
  // 1000-based units with two decimals.
  const double bytes = 4.0 * static_cast<double>(total);
  std::string memory;
  if (bytes < 1e3) memory = fmt::format("{} bytes", static_cast<int64_t>(bytes));
  else if (bytes < 1e6) memory = fmt::format("{:.2f} kilobytes", bytes / 1e3);
  else if (bytes < 1e9) memory = fmt::format("{:.2f} megabytes", bytes / 1e6);
  else memory = fmt::format("{:.2f} gigabytes", bytes / 1e9);
  out += fmt::format("Total Parameters: {}\nTotal Parameters Memory: {}\n", total, memory);
  return out;
}

}  // namespace axon
