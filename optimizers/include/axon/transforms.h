// Update transforms: the pieces optimizers are built from (Polaris.Updates / optax, over flat
// buffers).
//
// A transform owns some state (made once, like the parameters, on their device) and rewrites an
// update buffer in place: the chain starts from the gradient, each transform turns it into the next
// update, and the optimizer finally adds the result to the parameters (p += u). So the learning
// rate is a transform too (scale_by_learning_rate multiplies by -lr), as in Polaris, and a chain of
// transforms is a transform.
//
// Every buffer is an f32 tensor of one flat layout (any device): the element-wise transforms step a
// ZeRO shard like the whole; the ones that take a norm (scale_by_trust_ratio, clip_by_global_norm)
// take it over the buffer they are given (use parameter groups, axon/optimizers.h, for norms per
// tensor). Transforms run as compositions of the backend's element-wise kernels (axon/backend.h),
// so they work on the CPU and on a GPU alike; each costs a few passes over the buffer (measured
// against the fused Adam kernel in docs/benchmarks.md). After the first step they allocate nothing,
// except add_noise on a GPU (the noise is drawn on the host and copied) and centralize.
//
// Hyperparameters are doubles; derived scalars are computed in double on the host and rounded to
// f32 once, as PyTorch does. Bad hyperparameters throw std::invalid_argument naming the transform,
// the option and the value.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "axon/tensor.h"

namespace axon {

// What a transform may read in one step.
struct StepContext {
  int64_t step;          // 1 on the first step
  double lr;             // the optimizer's learning rate for this step
  const Tensor& params;  // the parameters before this step (f32, the updates' shape and device)
};

class Transform {
 public:
  virtual ~Transform() = default;
  // The name and every option, e.g. "trace(decay=0.9, nesterov=false)".
  virtual std::string config() const = 0;
  // Makes the state for parameters like `params` once (kept when already made or restored from a
  // checkpoint; throws naming the buffer when a restored one does not fit).
  virtual void init(const Tensor& params) { (void)params; }
  // Rewrites `updates` (f32, like ctx.params) in place.
  virtual void apply(Tensor& updates, const StepContext& ctx) = 0;
  // Named state buffers (f32, one value per parameter), undefined before init.
  virtual std::vector<std::pair<std::string, Tensor*>> state() { return {}; }
};
using TransformPtr = std::shared_ptr<Transform>;

// Applies the transforms in order; its state names are "<index>.<name>" (e.g. "0.exp_avg").
TransformPtr chain(std::vector<TransformPtr> transforms);
// A transform without state: fn(updates, ctx) rewrites updates in place. `config` names it.
TransformPtr stateless(std::string config, std::function<void(Tensor&, const StepContext&)> fn);

// u = factor·u.
TransformPtr scale(double factor);
// u = -factor·lr·u: the learning rate step that ends most chains (Polaris scale(-lr)).
TransformPtr scale_by_learning_rate(double factor = 1.0);
// u = schedule(steps taken before this one)·u (Polaris scale_by_schedule; axon/schedules.h
// makes schedules).
TransformPtr scale_by_schedule(std::function<double(int64_t)> schedule);

// Adam's scaling (Kingma & Ba 2015): m = b1·m + (1-b1)·u, v = b2·v + (1-b2)·u²,
// u = m̂ / (sqrt(v̂ + eps_root) + eps) with m̂ = m/(1-b1^t), v̂ = v/(1-b2^t).
// State: exp_avg, exp_avg_sq.
TransformPtr scale_by_adam(double b1 = 0.9, double b2 = 0.999, double eps = 1e-8, double eps_root = 0.0);
// AdaBelief (Zhuang et al. 2020, "AdaBelief Optimizer", arXiv:2010.07468, Alg. 2):
// m = b1·m + (1-b1)·u, s = b2·s + (1-b2)·(u-m)² + eps_root, u = m̂ / (sqrt(ŝ) + eps).
// State: exp_avg, exp_avg_var.
TransformPtr scale_by_belief(double b1 = 0.9, double b2 = 0.999, double eps = 0.0, double eps_root = 1e-16);
// Adagrad (Duchi et al. 2011), PyTorch's form: s += u², u = u / (sqrt(s) + eps), s starting at
// initial_accumulator_value. State: sum.
TransformPtr scale_by_rss(double initial_accumulator_value = 0.1, double eps = 1e-7);
// RMSProp (Hinton 2012), PyTorch's form: v = decay·v + (1-decay)·u², u = u / (sqrt(v) + eps),
// v starting at initial_scale. State: square_avg.
TransformPtr scale_by_rms(double decay = 0.9, double eps = 1e-8, double initial_scale = 0.0);
// Centered RMSProp (Graves 2013): also g = decay·g + (1-decay)·u and u = u / (sqrt(v - g²) + eps).
// State: square_avg, grad_avg.
TransformPtr scale_by_stddev(double decay = 0.9, double eps = 1e-8, double initial_scale = 0.0);
// RAdam (Liu et al. 2020, "On the Variance of the Adaptive Learning Rate and Beyond"), as PyTorch:
// with rho_t = rho_inf - 2t·b2^t/(1-b2^t), rho_inf = 2/(1-b2) - 1, u = m̂·r_t·sqrt(1-b2^t)/(sqrt(v)+eps)
// when rho_t > threshold, else u = m̂. State: exp_avg, exp_avg_sq.
TransformPtr scale_by_radam(double b1 = 0.9, double b2 = 0.999, double eps = 1e-8, double threshold = 5.0);
// NAdam (Dozat 2016, "Incorporating Nesterov Momentum into Adam"), as PyTorch 2:
// mu_t = b1·(1 - 0.5·0.96^(t·momentum_decay)), u = (1-mu_t)/(1-Π mu)·u/d + mu_{t+1}/(1-Π mu·mu_{t+1})·m/d
// with d = sqrt(v/(1-b2^t)) + eps. State: exp_avg, exp_avg_sq.
TransformPtr scale_by_nadam(double b1 = 0.9, double b2 = 0.999, double eps = 1e-8, double momentum_decay = 4e-3);
// Adamax (Kingma & Ba 2015, §7.1), as PyTorch: m = b1·m + (1-b1)·u, n = max(b2·n, |u| + eps),
// u = m / ((1-b1^t)·n). State: exp_avg, exp_inf.
TransformPtr scale_by_adamax(double b1 = 0.9, double b2 = 0.999, double eps = 1e-8);
// Yogi (Zaheer et al. 2018, "Adaptive Methods for Nonconvex Optimization", NeurIPS), with Polaris'
// bias correction: m = b1·m + (1-b1)·u, v = v - (1-b2)·sign(v - u²)·u², u = m̂ / (sqrt(v̂ + eps_root) + eps);
// m and v start at initial_accumulator_value. State: exp_avg, exp_avg_sq.
TransformPtr scale_by_yogi(double b1 = 0.9, double b2 = 0.999, double eps = 1e-3, double eps_root = 0.0,
                           double initial_accumulator_value = 1e-6);
// Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", arXiv:2302.06675):
// u' = sign(b1·m + (1-b1)·u), m = b2·m + (1-b2)·u. State: exp_avg.
TransformPtr scale_by_lion(double b1 = 0.9, double b2 = 0.99);
// LAMB's layer-wise trust ratio (You et al. 2020, arXiv:1904.00962): u = u·|p|/|u| with both norms
// over the buffer, floored at min_norm, times trust_coefficient; u is kept when either norm is 0.
// Reads the two norms on the host (a device sync on a GPU).
TransformPtr scale_by_trust_ratio(double min_norm = 0.0, double trust_coefficient = 1.0, double eps = 0.0);
// Momentum: t = decay·t + u, u = nesterov ? u + decay·t : t (PyTorch SGD with dampening 0).
// State: momentum_buffer.
TransformPtr trace(double decay = 0.9, bool nesterov = false);
// u = u + decay·p (L2 weight decay; decoupled when placed after the adaptive scaling).
TransformPtr add_decayed_weights(double decay = 0.0);
// Gradient noise (Neelakantan et al. 2015, arXiv:1511.06807): u = u + N(0, eta/t^gamma), drawn on
// the host by a counter-based generator of (seed, t, element) (SplitMix64 + Box-Muller, spelled out
// in transforms.cpp and tests/fixtures/make_optimizer_fixtures.py), so a resumed run draws the
// same noise.
TransformPtr add_noise(double eta = 0.01, double gamma = 0.55, uint64_t seed = 0);
// u = clamp(u, -delta, delta).
TransformPtr clip(double delta = 2.0);
// u = u·min(1, max_norm/|u|) (reads |u| on the host).
TransformPtr clip_by_global_norm(double max_norm = 1.0);
// Gradient centralization (Yong et al. 2020): for each tensor of rank > 1 in the flat layout (the
// shapes in order), subtracts the mean over all axes but the first. Throws when the shapes do not
// add up to the buffer.
TransformPtr centralize(std::vector<Shape> layout);

}  // namespace axon
