// Learning-rate schedules: pure functions of the step (Polaris.Schedules / optax; the values equal
// torch.optim.lr_scheduler's, tests/core/test_schedules.cpp).
//
// A schedule maps the number of steps already taken (0 for the first update) to a learning rate.
// Use it with `scheduled(optimizer, schedule)` (sets the learning rate before every step, so the
// training loop needs no change) or inside a chain with scale_by_schedule (axon/transforms.h).
// Bad options throw std::invalid_argument naming the schedule, the option and the value.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace axon {

class Optimizer;

struct Schedule {
  std::function<double(int64_t)> fn;  // step (>= 0) -> learning rate
  std::string config;                 // e.g. "cosine_decay(init=0.1, decay_steps=1000, alpha=0)"
  double operator()(int64_t step) const { return fn(step); }
};

// init at every step.
Schedule constant(double init);
// init·rate^((step - begin)/transition_steps), the exponent floored with staircase, init before
// `begin` (optax exponential_decay). torch ExponentialLR(gamma) is transition_steps 1.
Schedule exponential_decay(double init, double decay_rate = 0.95, int64_t transition_steps = 10,
                           int64_t transition_begin = 0, bool staircase = false);
// init·((1 - alpha)·(1 + cos(π·min(step, decay_steps)/decay_steps))/2 + alpha) (optax cosine_decay;
// torch CosineAnnealingLR(T_max = decay_steps, eta_min = alpha·init)).
Schedule cosine_decay(double init, int64_t decay_steps = 10, double alpha = 0.0);
// SGDR (Loshchilov & Hutter 2017), torch CosineAnnealingWarmRestarts: cycles of period_steps,
// each period_mult times the last; within a cycle eta_min + (init - eta_min)(1 + cos(π·t_cur/t_i))/2.
Schedule cosine_warm_restarts(double init, int64_t period_steps = 10, int64_t period_mult = 1, double eta_min = 0.0);
// (init - end_value)·(1 - min(max(step - begin, 0), transition_steps)/transition_steps)^power + end_value
// (optax polynomial_decay; Polaris' defaults; torch PolynomialLR is end_value 0).
Schedule polynomial_decay(double init, double end_value = 1e-3, double power = 2.0, int64_t transition_steps = 10,
                          int64_t transition_begin = 0);
// init·gamma^floor(step/step_size) (torch StepLR).
Schedule step_decay(double init, int64_t step_size = 10, double gamma = 0.1);
// Linear warmup in front of any schedule: then(0)·(start_factor + (1 - start_factor)·step/warmup_steps)
// for step < warmup_steps, then then(step - warmup_steps) (torch LinearLR followed by another
// scheduler in SequentialLR).
Schedule linear_warmup(Schedule then, int64_t warmup_steps, double start_factor = 0.0);

// Parses the command-line form "NAME" or "NAME:key=value,key=value" with the learning rate as init:
// constant; exponential (decay_rate, transition_steps, transition_begin, staircase); cosine
// (decay_steps, alpha); cosine_restarts (period_steps, period_mult, eta_min); polynomial (end_value,
// power, transition_steps, transition_begin); step (step_size, gamma); and the option warmup=N
// (with warmup_start_factor) on any of them, e.g. "cosine:decay_steps=5000,warmup=200". Throws
// naming the schedule and the key or value it does not know.
Schedule parse_schedule(const std::string& spec, double init);

// An optimizer whose learning rate follows `schedule`: before each step it sets the wrapped
// optimizer's rate to schedule(steps taken). Same name, state and flag as the wrapped one; its
// config() appends the schedule. Not capturable (a CUDA graph would replay the first rate): step()
// throws when capturable mode is set.
std::unique_ptr<Optimizer> scheduled(std::unique_ptr<Optimizer> optimizer, Schedule schedule);

// Reduce-on-plateau (torch ReduceLROnPlateau, mode "min", relative threshold): call update() with
// the monitored value once per epoch; returns the learning rate to use next.
class ReduceOnPlateau {
 public:
  explicit ReduceOnPlateau(double lr, double factor = 0.1, int64_t patience = 10, double threshold = 1e-4,
                           int64_t cooldown = 0, double min_lr = 0.0);
  double update(double value);
  double learning_rate() const { return lr_; }

 private:
  double lr_, factor_, threshold_, min_lr_;
  int64_t patience_, cooldown_, bad_ = 0, cooldown_left_ = 0;
  double best_;
};

}  // namespace axon
