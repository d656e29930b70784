// Hooks on layers (the seed's Axon.attach_hook) and capturing the outputs of intermediate layers
// in one call (the seed's proposed Axon.capture, PR #643).
//
//   Hooks hooks;
//   auto id = hooks.attach("dense_2", HookEvent::forward, [](const HookCall& c) { log(c.tensors[0]); });
//   predict(model, params, x, hooks);               // or TrainOptions::hooks for training
//   hooks.remove(id);
//   auto outs = capture(model, params, x, {"dense_2", "relu_3"});  // name -> output tensor
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "axon/tensor.h"

namespace axon {

class Model;
class Parameters;

// When a hook runs: before the layer (its inputs), after it (its output), or during backward
// with the gradient of the loss with respect to the layer's output (same shape and dtype as the
// output, batch axis first), as PyTorch's register_full_backward_hook's grad_output.
enum class HookEvent { pre_forward, forward, backward };
// In which passes: both, training forwards only (the trainer), or inference only (predict,
// evaluation). The seed's mode: :both | :train | :inference.
enum class HookMode { both, train, inference };

struct HookCall {
  const std::string& layer;           // "dense_2"
  HookEvent event;
  bool training;
  const std::vector<Tensor>& tensors;  // the inputs, {output}, or {gradient of the output}
};
using HookFn = std::function<void(const HookCall& call)>;

// A set of hooks, given to a forward pass (ForwardContext::hooks, predict, TrainOptions::hooks).
// Hooks of one layer and event run in the order they were attached. A hook may read the tensors
// (copy them to keep them: they may be reused) but must not change them; exceptions it throws
// propagate out of the forward or backward pass. Not thread-safe: do not attach or remove while a
// pass runs.
class Hooks {
 public:
  // Attaches `fn` to the layer named `layer` ("dense_2", as in summary(); "*" for every layer)
  // and returns a handle for remove(). The name is checked against the model when a pass runs:
  // an unknown name throws std::invalid_argument listing the model's layer names.
  uint64_t attach(std::string layer, HookEvent on, HookFn fn, HookMode mode = HookMode::both);
  // Removes a hook by its handle; unknown handles are ignored (removing twice is harmless).
  void remove(uint64_t handle);
  size_t size() const { return hooks_.size(); }
  bool empty() const { return hooks_.empty(); }

  // For the model's forward: checks the names against the model's layers (throws as above) ...
  void check_layers(const std::vector<std::string>& layer_names) const;
  // ... runs the hooks of `layer` and `on` for a pass in this mode ...
  void run(const std::string& layer, HookEvent on, bool training, const std::vector<Tensor>& tensors) const;
  // ... and wraps a layer's output so that its backward hooks run with the output's gradient (the
  // output itself when no backward hook applies or it needs no gradient).
  Tensor wrap_for_backward(const std::string& layer, bool training, const Tensor& output) const;

 private:
  struct Hook {
    uint64_t id;
    std::string layer;
    HookEvent on;
    HookMode mode;
    HookFn fn;
  };
  bool applies(const Hook& h, const std::string& layer, HookEvent on, bool training) const;
  std::vector<Hook> hooks_;
  uint64_t next_ = 1;
};

// predict() with hooks.
Tensor predict(const Model& model, const Parameters& params, const Tensor& input, const Hooks& hooks);

// The outputs of the named layers for `input` in one inference pass (predict), by name. The
// tensors are the layers' own outputs (batch axis first). Throws std::invalid_argument listing
// the model's layer names when a name is not one of them, or when `layers` is empty.
std::map<std::string, Tensor> capture(const Model& model, const Parameters& params, const Tensor& input,
                                      const std::vector<std::string>& layers);

}  // namespace axon
