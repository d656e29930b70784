// Optimizers update a flat parameter buffer from a flat gradient buffer of the same layout, on
// the buffers' device (one fused kernel per step: axon/backend.h), with their state beside them.
//
// Working on flat spans (not per-tensor) makes each update one fused loop over memory, lets
// data-parallel training reduce one buffer, and lets a ZeRO-style optimizer own just a slice
// of the buffer: the update rules below are element-wise, so a shard is stepped like the whole.
// Any differentiable objective can be optimized: hand over its parameter and gradient arrays.
//
// Update formulas follow PyTorch 1.13 (torch.optim.SGD, Adam, AdamW) exactly; those three run as one
// fused kernel per step. Every other optimizer is a chain of update transforms (axon/transforms.h)
// ending in the learning rate step; docs/optimizers.md lists each one's defaults and formula.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "axon/tensor.h"
#include "axon/transforms.h"

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
  // True when the update of each element depends only on that element's parameter, gradient and
  // state (SGD, Adam, AdamW): such an optimizer can step a ZeRO shard of the flat buffer like the
  // whole (axon/zero.h). Norm-based ones (LAMB's trust ratio, global-norm clipping) and parameter
  // groups cannot, and return false.
  virtual bool elementwise() const { return false; }
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

// ---- optimizers built from update transforms (axon/transforms.h) ----
// Each runs its chain and then p += u. Defaults follow Polaris (the seed library) where it has the
// optimizer, else PyTorch; the formulas follow PyTorch where PyTorch has the optimizer (the
// fixtures check 20 steps against it) and the cited paper otherwise. Capturable mode (CUDA graphs)
// is not supported by these: step() throws when it is set.

// An optimizer from any transform: `name` names it in errors and config(), which reads
// "name(lr=..., <the transform's config>)". The transform usually ends with
// scale_by_learning_rate(), which reads the optimizer's (possibly scheduled) learning rate.
std::unique_ptr<Optimizer> chain_optimizer(std::string name, double lr, TransformPtr transform);

// torch.optim.Adagrad: add_decayed_weights(wd) → scale_by_rss → -lr/(1 + (t-1)·lr_decay).
// Polaris' defaults (lr 1e-3, initial accumulator 0.1, eps 1e-7; PyTorch: 1e-2, 0, 1e-10).
struct AdagradOptions {
  double lr = 1e-3;
  double lr_decay = 0.0;
  double weight_decay = 0.0;
  double initial_accumulator_value = 0.1;
  double eps = 1e-7;
};
// torch.optim.RMSprop: add_decayed_weights(wd) → scale_by_rms or, centered, scale_by_stddev →
// trace(momentum, nesterov) when momentum > 0 → -lr. `decay` is PyTorch's alpha (Polaris' default
// 0.9; PyTorch's 0.99).
struct RmspropOptions {
  double lr = 1e-2;
  double decay = 0.9;
  double eps = 1e-8;
  double weight_decay = 0.0;
  double momentum = 0.0;
  bool centered = false;
  bool nesterov = false;
  double initial_scale = 0.0;
};
// torch.optim.RAdam (add_decayed_weights(wd) → scale_by_radam → -lr).
struct RadamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  double threshold = 5.0;
};
// NAdam as torch.optim.NAdam in PyTorch 2 (1.13 multiplies the momentum product by mu_t twice in
// the second term): add_decayed_weights(wd) → scale_by_nadam → -lr.
struct NadamOptions {
  double lr = 2e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  double momentum_decay = 4e-3;
};
// torch.optim.Adamax (add_decayed_weights(wd) → scale_by_adamax → -lr).
struct AdamaxOptions {
  double lr = 2e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
};
// AdaBelief (Zhuang et al. 2020): scale_by_belief → add_decayed_weights(wd, decoupled) → -lr.
struct AdabeliefOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 0.0;
  double eps_root = 1e-16;
  double weight_decay = 0.0;
};
// Fromage (Bernstein et al. 2020, arXiv:2002.03432): p = (p - lr·|p|/|g|·g) / sqrt(1 + lr²), the
// norms over the buffer stepped (per tensor with parameter groups); as optax:
// scale_by_trust_ratio(min_norm) → scale_by_learning_rate(1/sqrt(1+lr²)) → add_decayed_weights(1/sqrt(1+lr²) - 1).
struct FromageOptions {
  double lr = 1e-2;
  double min_norm = 0.0;
};
// LAMB (You et al. 2020, arXiv:1904.00962): scale_by_adam(eps, eps_root) → add_decayed_weights(wd)
// → scale_by_trust_ratio(min_norm) → -lr (Polaris).
struct LambOptions {
  double lr = 1e-2;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double eps_root = 0.0;
  double weight_decay = 0.0;
  double min_norm = 0.0;
};
// Noisy SGD (Neelakantan et al. 2015): -lr → add_noise(eta, gamma, seed) (Polaris: the noise is
// not scaled by the learning rate).
struct NoisySgdOptions {
  double lr = 1e-2;
  double eta = 0.01;
  double gamma = 0.55;
  uint64_t seed = 0;
};
// Yogi (Zaheer et al. 2018): scale_by_yogi → -lr (Polaris' defaults).
struct YogiOptions {
  double lr = 1e-2;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-3;
  double eps_root = 0.0;
  double initial_accumulator_value = 1e-6;
};
// Lion (Chen et al. 2023): scale_by_lion → add_decayed_weights(wd, decoupled) → -lr (the paper's
// defaults; its weight decay is typically 3-10x AdamW's with a 3-10x smaller lr).
struct LionOptions {
  double lr = 1e-4;
  double beta1 = 0.9;
  double beta2 = 0.99;
  double weight_decay = 0.0;
};

std::unique_ptr<Optimizer> adagrad(AdagradOptions options = {});
std::unique_ptr<Optimizer> rmsprop(RmspropOptions options = {});
std::unique_ptr<Optimizer> radam(RadamOptions options = {});
std::unique_ptr<Optimizer> nadam(NadamOptions options = {});
std::unique_ptr<Optimizer> adamax(AdamaxOptions options = {});
std::unique_ptr<Optimizer> adabelief(AdabeliefOptions options = {});
std::unique_ptr<Optimizer> fromage(FromageOptions options = {});
std::unique_ptr<Optimizer> lamb(LambOptions options = {});
std::unique_ptr<Optimizer> noisy_sgd(NoisySgdOptions options = {});
std::unique_ptr<Optimizer> yogi(YogiOptions options = {});
std::unique_ptr<Optimizer> lion(LionOptions options = {});

// The names make_optimizer accepts: adabelief adagrad adam adamax adamw fromage lamb lion nadam
// noisy_sgd radam rmsprop sgd yogi.
const std::vector<std::string>& optimizer_names();
// One of optimizer_names() with default options and this learning rate; throws
// std::invalid_argument listing the names on any other.
std::unique_ptr<Optimizer> make_optimizer(const std::string& name, double lr);

// ---- parameter groups ----
// A group: the parameters whose name contains any of `name_contains` (e.g. {"bias", "norm"}) are
// stepped by optimizers from `make` (one per parameter tensor: its own learning rate and weight
// decay, and norms per tensor for lamb and fromage).
struct ParamGroup {
  std::vector<std::string> name_contains;
  std::function<std::unique_ptr<Optimizer>()> make;
};
// An optimizer over the flat buffer laid out as `layout` (each parameter's name and number of
// elements, in buffer order: Parameters::entries()). Each parameter goes to the first group that
// selects it, else to optimizers from `rest`. set_learning_rate(lr) scales every group's own rate
// by lr / rest's initial rate (PyTorch's schedulers do the same), so a schedule drives all groups.
// State names are "<parameter>.<state>". Throws when the layout does not add up to the buffer
// stepped, or on an empty layout.
std::unique_ptr<Optimizer> param_groups(std::vector<std::pair<std::string, int64_t>> layout,
                                        std::vector<ParamGroup> groups,
                                        std::function<std::unique_ptr<Optimizer>()> rest);

}  // namespace axon
