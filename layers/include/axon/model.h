// The model builder: a model is an immutable graph of layers, built by piping.
//
//   auto model = input({-1, 784}) | dense(128) | dense(10, Activation::softmax);
//   Parameters params = init(model, /*seed=*/0);
//   Tensor probs = predict(model, params, x);
//
// As in Elixir's Axon, the model only describes the computation; parameters are a separate value
// made by init() and passed to predict()/forward().
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "axon/activations.h"
#include "axon/layer.h"
#include "axon/nn_ops.h"
#include "axon/shape_ops.h"

// conv, max_pool, avg_pool, global_*_pool: axon/conv_layers.h (included at the end).

namespace axon {

struct ModelNode {
  std::shared_ptr<const Layer> layer;
  std::vector<std::shared_ptr<const ModelNode>> inputs;
};

class Model {
 public:
  Model() = default;
  explicit Model(std::shared_ptr<const ModelNode> output) : output_(std::move(output)) {}
  // A new model whose output is `layer` applied to the outputs of `inputs`.
  static Model apply(std::shared_ptr<const Layer> layer, const std::vector<Model>& inputs);

  const std::shared_ptr<const ModelNode>& output() const { return output_; }
  bool defined() const { return output_ != nullptr; }

 private:
  std::shared_ptr<const ModelNode> output_;
};

// A step in a pipe: `model | dense(128)` calls the step on `model`.
struct LayerStep {
  std::function<Model(const Model&)> apply;
};
inline Model operator|(const Model& model, const LayerStep& step) { return step.apply(model); }

// ---- builders ----
Model input(Shape shape);  // use -1 for the batch dimension: input({-1, 784})
// dense: x {batch, ..., in} -> {batch, ..., units} = x·kernel + bias over the last axis (any rank ≥ 2,
// as the seed's); params kernel {in, units}, bias {units}.
LayerStep dense(int64_t units, Activation activation = Activation::none);
struct DenseOptions {
  Activation activation = Activation::none;
  bool use_bias = true;
  Initializer kernel_initializer = initializers::glorot_uniform();
  Initializer bias_initializer = initializers::zeros();
};
LayerStep dense(int64_t units, DenseOptions options);
// An activation as a layer of its own, named after it ("gelu_3"); the layer builders below are
// shorthands with the seed's option names and defaults (formulas: axon/activations.h). Invalid
// options throw std::invalid_argument when the model is built.
LayerStep activation(Activation activation);
LayerStep celu(double alpha = 1.0);
LayerStep elu(double alpha = 1.0);
LayerStep exp();
LayerStep gelu(GeluApproximation approximate = GeluApproximation::none);
LayerStep hard_sigmoid(double alpha = 0.2, double beta = 0.2);
LayerStep hard_silu(double alpha = 0.2, double beta = 0.2);
LayerStep hard_swish(double alpha = 0.2, double beta = 0.2);  // hard_silu
LayerStep hard_tanh();
LayerStep leaky_relu(double alpha = 1.0e-2);
LayerStep log_sigmoid();
LayerStep log_softmax(int64_t axis = -1);
LayerStep log_sumexp(int64_t axis = -1);  // {batch, n} -> {batch, 1}
LayerStep mish();
LayerStep relu();
LayerStep relu6();
LayerStep selu(double alpha = 1.6732632423543772848170429916717, double gamma = 1.0507009873554804934193349852946);
LayerStep sigmoid();
LayerStep silu();
LayerStep softmax(int64_t axis = -1);
LayerStep softplus();
LayerStep softsign();
LayerStep tanh();
LayerStep flatten();

// Dropout layers (axon/nn_ops.h): active in training mode only (ForwardContext::training, as the
// trainer's forward pass), the identity in predict(). rate in [0, 1) (default 0.5, as the seed);
// seed mixes into the mask seed drawn from the trainer's generator; channel_index (spatial_dropout
// and feature_alpha_dropout only) is the channel axis, default −1 (channels last).
struct DropoutOptions {
  double rate = 0.5;
  uint64_t seed = 0;
  int64_t channel_index = -1;
};
LayerStep dropout(double rate = 0.5);
LayerStep dropout(DropoutOptions options);
LayerStep alpha_dropout(DropoutOptions options = {});
LayerStep spatial_dropout(DropoutOptions options = {});
LayerStep feature_alpha_dropout(DropoutOptions options = {});

// layer_norm over the channel axis: params gamma {C} and beta {C}. The seed's defaults, including
// its gamma initializer glorot_uniform (not ones: pass initializers::ones() for PyTorch's).
struct LayerNormOptions {
  int64_t channel_index = -1;
  double epsilon = 1e-5;
  Initializer gamma_initializer = initializers::glorot_uniform();
  Initializer beta_initializer = initializers::zeros();
};
LayerStep layer_norm(LayerNormOptions options = {});

// rms_norm over the channel axis: y = x/√(mean(x²) + epsilon)·(shift + gamma); param gamma {C}.
struct RmsNormOptions {
  int64_t channel_index = -1;
  double epsilon = 1e-6;
  double shift = 0.0;
  Initializer gamma_initializer = initializers::ones();
};
LayerStep rms_norm(RmsNormOptions options = {});

// ---- normalization with model state; group and instance normalization (axon/nn_ops.h) ----
// Invalid options throw std::invalid_argument when the layer is built (epsilon < 0, momentum
// outside [0, 1], num_groups < 1) or when the model is planned (init, summary) for what depends on
// the input shape (a channel axis out of range or on the batch axis, num_groups not dividing the
// channels), naming the layer, its options and the shape.

// batch_norm: params gamma {C} and beta {C}; model state mean {C} (zeros) and var {C} (ones),
// updated in training mode (the trainer's forward) and used in inference mode (predict, evaluation).
// The seed's defaults, including gamma_initializer glorot_uniform (pass initializers::ones() for
// PyTorch's). running = (1 − momentum)·running + momentum·batch, PyTorch's convention (see
// docs/layers.md for the seed's).
struct BatchNormOptions {
  int64_t channel_index = -1;
  double epsilon = 1e-5;
  double momentum = 0.1;
  Initializer gamma_initializer = initializers::glorot_uniform();
  Initializer beta_initializer = initializers::zeros();
};
LayerStep batch_norm(BatchNormOptions options = {});

// group_norm over num_groups groups of channels per sample: params gamma {C} (ones) and beta {C}.
struct GroupNormOptions {
  int64_t channel_index = -1;
  double epsilon = 1e-5;
  Initializer gamma_initializer = initializers::ones();
  Initializer beta_initializer = initializers::zeros();
};
LayerStep group_norm(int64_t num_groups, GroupNormOptions options = {});

// instance_norm: each (sample, channel) over the spatial axes (rank ≥ 3); params gamma {C}
// (glorot_uniform, the seed's) and beta {C}. Always the instance's own statistics: no model state
// (PyTorch's default; the seed keeps running statistics it does not use differently).
struct InstanceNormOptions {
  int64_t channel_index = -1;
  double epsilon = 1e-5;
  Initializer gamma_initializer = initializers::glorot_uniform();
  Initializer beta_initializer = initializers::zeros();
};
LayerStep instance_norm(InstanceNormOptions options = {});

// ---- shape layers (axon/shape_ops.h) ----
enum class Channels { last, first };  // the seed's channels: :last | :first
// reshape's special sizes: the input's batch size (the seed's :batch) and the one size inferred
// from the element count (:auto). The new shape is the whole shape, batch axis included:
//   reshape({kBatch, 28, 28, 1})     reshape({kBatch, kAuto})
inline constexpr int64_t kBatch = -2;
inline constexpr int64_t kAuto = -1;
LayerStep reshape(Shape shape);
// transpose: the permutation of every axis, batch included ({0, 2, 1} swaps the last two of a 3-d input).
LayerStep transpose(std::vector<int64_t> permutation);
// pad: one {before, after} pair per spatial axis (the axes other than batch and channels), value
// filled in; negative amounts crop.
LayerStep pad(std::vector<std::pair<int64_t, int64_t>> config, double value = 0.0, Channels channels = Channels::last);
// resize a 4-d input's two spatial axes to {height, width} (axon::resize in axon/shape_ops.h: the
// methods, and antialias — on by default, as the seed — when downsampling).
LayerStep resize(int64_t height, int64_t width, ResizeMethod method = ResizeMethod::nearest,
                 Channels channels = Channels::last, bool antialias = true);

// ---- combinators: layers of several inputs ----
// Element-wise, with NumPy broadcasting (a size 1 stretches; the batch size −1 matches any).
Model add(const Model& a, const Model& b);
Model add(const std::vector<Model>& xs);
Model subtract(const Model& a, const Model& b);
Model subtract(const std::vector<Model>& xs);  // xs[0] − xs[1] − ...
Model multiply(const Model& a, const Model& b);
Model multiply(const std::vector<Model>& xs);
// Joined along axis (not the batch axis); other axes must agree.
Model concatenate(const Model& a, const Model& b, int64_t axis = -1);
Model concatenate(const std::vector<Model>& xs, int64_t axis = -1);
// Cut along axis into n equal parts (n must divide the axis), or into parts of these sizes.
std::vector<Model> split(const Model& x, int64_t n, int64_t axis = -1);
std::vector<Model> split(const Model& x, std::vector<int64_t> sizes, int64_t axis = -1);
// A fixed tensor (no batch axis; it broadcasts in merges), converted to the model's dtype and device.
Model constant(const Tensor& value);
// on_true's output when predicate(parent's output) holds, else on_false's (their shapes must agree).
// Both branches are computed; the predicate reads its tensor on the host.
Model cond(const Model& parent, std::function<bool(const Tensor&)> predicate, const Model& on_true,
           const Model& on_false);

// ---- custom layers: any differentiable function of tensors (the seed's Axon.layer and Axon.nx) ----
using LayerFunction = std::function<Tensor(const std::vector<Tensor>& inputs, std::span<const Tensor> params)>;
struct CustomLayerOptions {
  std::string op_name = "custom";        // the name in summaries: "<op_name>_<n>"
  std::vector<ParamSpec> params;         // trainable parameters, passed to the function in this order
  // The output shape from the input shapes (batch −1). When empty, it is traced: the function runs
  // once on zeros with batch size 2, and an output axis 0 of size 2 becomes the batch.
  std::function<Shape(const std::vector<Shape>&)> output_shape;
  enum class Mode { both, train, inference } mode = Mode::both;  // otherwise the first input passes through
};
Model layer(LayerFunction function, const std::vector<Model>& inputs, CustomLayerOptions options = {});
// A parameterless one-input function layer, piped: x | nx([](const Tensor& t) { return t * t; }).
LayerStep nx(std::function<Tensor(const Tensor&)> function, std::string op_name = "nx");

// ---- the analysed model: layers in execution order with names and shapes ----
struct PlannedLayer {
  const ModelNode* node;
  std::string name;              // "<op>_<n>", one counter over the whole model
  std::vector<size_t> inputs;    // indices into ModelPlan::layers
  Shape output_shape;            // batch dimension -1
  std::vector<ParamSpec> params;
  size_t first_param = 0;        // index of its first entry in Parameters
  std::vector<ParamSpec> state;  // its model state (Layer::state)
  size_t first_state = 0;        // index of its first entry in Parameters::state_entries()
  // The layer whose parameters this one shares (Layer::shared_params_input; an index into
  // ModelPlan::layers), or SIZE_MAX.
  size_t shares_params_of = SIZE_MAX;
};

struct ModelPlan {
  std::vector<PlannedLayer> layers;  // topological order; the last one is the output
  std::vector<size_t> input_layers;  // indices of the input layers
};

// Walks the graph, names the layers and infers shapes. `input_shape` (optional) replaces the
// declared shape of a single input layer; it must agree with it except where the declared one has -1.
// Shape errors name the layer and both shapes.
ModelPlan plan(const Model& model, const Shape& input_shape = {});

// ---- parameters: every parameter of a model in one flat buffer ----
class Parameters {
 public:
  struct Entry {
    std::string name;  // "dense_2.kernel"
    Tensor value;      // view into the flat values buffer; requires grad; .grad() views the flat grads buffer
  };

  Parameters() = default;
  // Lays out parameters of these names and shapes contiguously, in this order, zero-filled, of
  // `dtype` (f32, f64 or bf16) on `device`. Throws when the device cannot be used (see
  // axon/allocator.h) or the dtype is not floating.
  // `state_layout` names and shapes the model state (zero-filled, f32, or f64 for f64 parameters).
  Parameters(const std::vector<std::pair<std::string, Shape>>& layout, Device device = Device::cpu(),
             DType dtype = DType::f32, const std::vector<std::pair<std::string, Shape>>& state_layout = {});

  size_t size() const { return entries_.size(); }       // number of tensors
  size_t count() const { return total_; }              // number of floats
  const std::vector<Entry>& entries() const { return entries_; }
  const Tensor& operator[](const std::string& name) const;  // throws naming the missing entry
  const Tensor& at(size_t index) const { return entries_.at(index).value; }

  Device device() const { return device_; }
  DType dtype() const { return dtype_; }

  // The flat buffers that data-parallel training all-reduces and optimizers update in one pass,
  // as host f32 spans (std::logic_error naming the device and dtype for parameters that are not
  // f32 on the CPU) ...
  std::span<float> values();
  std::span<const float> values() const;
  std::span<float> grads();
  std::span<const float> grads() const;
  // ... or as tensors {count()} of the parameters' dtype and device, sharing the buffers.
  Tensor flat_values() const;
  Tensor flat_grads() const;
  void zero_grad();
  // A deep copy with its own buffers, on the same device or on another one, converted to `dtype`
  // (a bf16 compute copy of f32 master weights, for mixed precision).
  // The model state is copied too.
  Parameters clone() const;
  Parameters to(Device device) const;
  Parameters to(Device device, DType dtype) const;

  // ---- model state: non-trainable values beside the parameters (Layer::state) ----
  // Entries "batch_norm_3.mean", ..., views into one flat buffer of their own (no grad, never
  // touched by an optimizer); f32, or f64 for f64 parameters, on the parameters' device.
  const std::vector<Entry>& state_entries() const { return state_entries_; }
  size_t state_count() const { return state_total_; }  // number of values
  const Tensor& state(const std::string& name) const;  // throws naming the missing entry
  Tensor flat_state() const;                           // {state_count()}, sharing the buffer
  DType state_dtype() const { return dtype_ == DType::f64 ? DType::f64 : DType::f32; }
  // Makes this object's state entries views of `other`'s state buffer (same names and shapes, same
  // device, else std::invalid_argument): a mixed-precision compute copy then updates the master
  // copy's running statistics directly.
  void share_state(const Parameters& other);

  // ---- freezing (the seed's Axon.ModelState.freeze/unfreeze) ----
  // `select` gets each parameter's name ("dense_2.kernel") and picks the ones to freeze (or to
  // make trainable again). A frozen parameter stops requiring grad, so backward does not compute
  // its gradient (its slice of grads() stays zero), and optimizers wrapped by skip_frozen()
  // (axon/model_tools.h) leave its value and state alone; the Trainer refuses frozen parameters
  // with an optimizer that is not wrapped. Returns the number of parameters newly frozen
  // (unfrozen). clone() and to() keep the marks. Model state is never trained and has no mark.
  size_t freeze(const std::function<bool(const std::string& name)>& select);
  size_t unfreeze(const std::function<bool(const std::string& name)>& select);
  bool frozen(const std::string& name) const;  // throws naming the missing entry
  bool frozen(size_t index) const { return !frozen_.empty() && frozen_.at(index); }
  std::vector<std::string> frozen_names() const;  // in buffer order

 private:
  std::vector<bool> frozen_;  // one per entry once anything was frozen
  std::vector<Entry> entries_;
  std::map<std::string, size_t> index_;
  void check_host(const char* what) const;

  std::shared_ptr<Storage> values_, grads_, state_;
  std::vector<Entry> state_entries_;
  std::map<std::string, size_t> state_index_;
  size_t total_ = 0, state_total_ = 0;
  Device device_ = Device::cpu();
  DType dtype_ = DType::f32;
};

Parameters init(const Model& model, uint64_t seed);
Parameters init(const Model& model, const Shape& input_shape, uint64_t seed);

// Runs the model. predict() is inference: no autograd graph, training-only layers off.
Tensor predict(const Model& model, const Parameters& params, const Tensor& input);
// forward() records the autograd graph when grad mode is on (training step).
Tensor forward(const Model& model, const Parameters& params, const Tensor& input, const ForwardContext& ctx);
Tensor forward(const ModelPlan& plan, const Parameters& params, const Tensor& input, const ForwardContext& ctx);
// Models of several inputs take them in the order of ModelPlan::input_layers: the order in which
// the graph first reaches them from the output, inputs of a merge left to right (add(a, b): a's
// input first). Throws naming the count, or the input layer and both shapes.
Tensor forward(const ModelPlan& plan, const Parameters& params, const std::vector<Tensor>& inputs,
               const ForwardContext& ctx);
Tensor predict(const Model& model, const Parameters& params, const std::vector<Tensor>& inputs);

// The model summary table (layer, output shape, parameter count including model state), as
// Elixir's Axon prints it, then its footer lines "Total Parameters: N" and "Total Parameters
// Memory: X" (32 bits a value, 1000-based units).
std::string summary(const Model& model);

}  // namespace axon

#include "axon/conv_layers.h"  // conv and pooling builders, which return LayerStep
#include "axon/attention_layers.h"  // embedding, tied_dense, multi_head_attention, transformer_block
