// Optimizers update a flat parameter buffer from a flat gradient buffer of the same layout, on
// the buffers' device (one fused kernel per step: axon/backend.h), with their state beside them.
//
// Working on flat spans (not per-tensor) makes each update one fused loop over memory, lets
// data-parallel training reduce one buffer, and lets a ZeRO-style optimizer own just a slice
// of the buffer: the update rules below are element-wise, so a shard is stepped like the whole.
// Any differentiable objective can be optimized: hand over its parameter and gradient arrays.
//
// Update formulas follow PyTorch 1.13 (torch.optim.SGD, Adam, AdamW) exactly.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "axon/tensor.h"

namespace axon {

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  virtual std::string name() const = 0;
  // The name and every hyperparameter that changes the update, e.g.
  // "adam(lr=0.001, beta1=0.9, beta2=0.999, eps=1e-08, weight_decay=0, amsgrad=false)".
  // Numbers are written in their shortest exact form, so two optimizers that would update
  // differently never describe themselves alike (data-parallel ranks compare these strings).
  virtual std::string config() const = 0;

  // One update of f32 tensors of equal size on one device (any shape; flat buffers in practice).
  // The first call fixes the size and the device; the state lives on that device. Throws
  // std::invalid_argument naming the optimizer, the sizes, dtypes or devices that do not fit.
  void step(Tensor& params, const Tensor& grads);
  // The same over host memory.
  void step(std::span<float> params, std::span<const float> grads);

  // One f32 element on the parameters' device: 1 when the last step left a parameter inf or NaN,
  // else 0 (computed by the update kernel itself; reading it waits for the device). Undefined
  // before the first step.
  const Tensor& nonfinite_flag() const { return nonfinite_; }

  double learning_rate() const { return lr_; }
  // Throws std::invalid_argument for a negative or non-finite rate, or one that is not 0 and
  // rounds to 0 or inf in f32 (the precision of the update kernels), e.g. 1e-50 or 1e39.
  void set_learning_rate(double lr);
  int64_t steps() const { return steps_; }
  // Named state buffers (momentum, moments), for checkpoints and sharding: f32 tensors, undefined
  // until the first step. A buffer set from a checkpoint must hold one value per parameter, on the
  // parameters' device; set_steps restores the step count with it.
  virtual std::vector<std::pair<std::string, Tensor*>> state() = 0;
  void set_steps(int64_t steps);

  // Capturable mode, for steps captured in a CUDA graph (PyTorch's `capturable=True`): the step
  // count also lives on the parameters' device (one f64 value that each step() increments there),
  // and the update kernels derive every step-dependent scalar from it, so replaying the captured
  // kernels with the same arguments performs step t+1, t+2, ... Results match the host-derived
  // scalars to the rounding of the device's pow. Learning-rate changes are not seen by a graph
  // captured before them.
  void set_capturable(bool capturable);
  bool capturable() const { return capturable_; }
  // After a CUDA graph replayed a captured step(), which advanced the device count itself: advances
  // the host count (steps()) to match.
  void count_replayed_step() { ++steps_; }

 protected:
  explicit Optimizer(double lr);
  // Called with steps() already incremented and the arguments checked.
  virtual void update(Tensor& params, const Tensor& grads) = 0;
  // Returns the state buffer `what`, made (zero-filled, like params) when undefined; throws when it
  // does not hold one f32 value per parameter on the parameters' device.
  Tensor& state_like(Tensor& buffer, const Tensor& params, const char* what) const;
  // Throws when a nonzero hyperparameter would round to 0 or inf as a float.
  static void check_float(const char* what, double value);
  double lr_;
  int64_t steps_ = 0;
  Tensor nonfinite_;
  size_t size_ = 0;
  bool capturable_ = false;
  Tensor device_step_;  // capturable mode: f64 {} on the parameters' device, = steps_ after a step
};

// Hyperparameters are doubles, as in PyTorch (Python floats): derived scalars such as 1 - beta1
// or lr / (1 - beta1^t) are computed in double and only then rounded to float, like PyTorch does.
struct SgdOptions {
  double lr = 1e-3;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
};

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;  // Adam: L2 added to the gradient; AdamW: decoupled decay
  bool amsgrad = false;
};

std::unique_ptr<Optimizer> sgd(SgdOptions options = {});
std::unique_ptr<Optimizer> adam(AdamOptions options = {});
// AdamW's weight decay defaults to 1e-2, as in PyTorch.
std::unique_ptr<Optimizer> adamw(AdamOptions options = {.lr = 1e-3, .weight_decay = 1e-2});

// "sgd", "adam" or "adamw" with default options and this learning rate; throws on other names.
std::unique_ptr<Optimizer> make_optimizer(const std::string& name, double lr);

}  // namespace axon
