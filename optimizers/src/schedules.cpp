#include "axon/schedules.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numbers>
#include <stdexcept>

#include "axon/optimizers.h"

namespace axon {

namespace {

void require(bool ok, const char* schedule, const char* option, double value, const char* rule) {
  if (!ok) throw std::invalid_argument(fmt::format("{}: option {} = {} is out of range (need {})", schedule, option, value, rule));
}
void require_init(const char* schedule, double init) {
  require(std::isfinite(init) && init >= 0.0, schedule, "init", init, "a finite learning rate >= 0");
}
void require_step(const char* schedule, int64_t step) {
  if (step < 0) throw std::invalid_argument(fmt::format("{}: step {} is negative", schedule, step));
}

}  // namespace

Schedule constant(double init) {
  require_init("constant", init);
  return {[init](int64_t step) {
            require_step("constant", step);
            return init;
          },
          fmt::format("constant(init={})", init)};
}

Schedule exponential_decay(double init, double decay_rate, int64_t transition_steps, int64_t transition_begin,
                           bool staircase) {
  require_init("exponential_decay", init);
  require(decay_rate > 0.0 && std::isfinite(decay_rate), "exponential_decay", "decay_rate", decay_rate, "> 0");
  require(transition_steps > 0, "exponential_decay", "transition_steps", static_cast<double>(transition_steps), "> 0");
  require(transition_begin >= 0, "exponential_decay", "transition_begin", static_cast<double>(transition_begin), ">= 0");
  return {[=](int64_t step) {
            require_step("exponential_decay", step);
            if (step < transition_begin) return init;
            double p = static_cast<double>(step - transition_begin) / static_cast<double>(transition_steps);
            if (staircase) p = std::floor(p);
            return init * std::pow(decay_rate, p);
          },
          fmt::format("exponential_decay(init={}, decay_rate={}, transition_steps={}, transition_begin={}, staircase={})",
                      init, decay_rate, transition_steps, transition_begin, staircase)};
}

Schedule cosine_decay(double init, int64_t decay_steps, double alpha) {
  require_init("cosine_decay", init);
  require(decay_steps > 0, "cosine_decay", "decay_steps", static_cast<double>(decay_steps), "> 0");
  require(alpha >= 0.0 && alpha <= 1.0, "cosine_decay", "alpha", alpha, "0 <= alpha <= 1");
  return {[=](int64_t step) {
            require_step("cosine_decay", step);
            const double t = static_cast<double>(std::min(step, decay_steps)) / static_cast<double>(decay_steps);
            const double cosine = 0.5 * (1.0 + std::cos(std::numbers::pi * t));
            return init * ((1.0 - alpha) * cosine + alpha);
          },
          fmt::format("cosine_decay(init={}, decay_steps={}, alpha={})", init, decay_steps, alpha)};
}

Schedule cosine_warm_restarts(double init, int64_t period_steps, int64_t period_mult, double eta_min) {
  require_init("cosine_warm_restarts", init);
  require(period_steps > 0, "cosine_warm_restarts", "period_steps", static_cast<double>(period_steps), "> 0");
  require(period_mult >= 1, "cosine_warm_restarts", "period_mult", static_cast<double>(period_mult), ">= 1");
  require(eta_min >= 0.0 && eta_min <= init, "cosine_warm_restarts", "eta_min", eta_min, "0 <= eta_min <= init");
  return {[=](int64_t step) {
            require_step("cosine_warm_restarts", step);
            // Walk the cycles in integers (torch uses a float log, exact for these sizes).
            int64_t t_cur = step, t_i = period_steps;
            while (t_cur >= t_i) {
              t_cur -= t_i;
              t_i *= period_mult;
            }
            return eta_min + (init - eta_min) * (1.0 + std::cos(std::numbers::pi * static_cast<double>(t_cur) /
                                                                static_cast<double>(t_i))) / 2.0;
          },
          fmt::format("cosine_warm_restarts(init={}, period_steps={}, period_mult={}, eta_min={})", init, period_steps,
                      period_mult, eta_min)};
}

Schedule polynomial_decay(double init, double end_value, double power, int64_t transition_steps, int64_t transition_begin) {
  require_init("polynomial_decay", init);
  require(std::isfinite(end_value) && end_value >= 0.0, "polynomial_decay", "end_value", end_value, "a finite value >= 0");
  require(std::isfinite(power) && power > 0.0, "polynomial_decay", "power", power, "> 0");
  require(transition_steps > 0, "polynomial_decay", "transition_steps", static_cast<double>(transition_steps), "> 0");
  require(transition_begin >= 0, "polynomial_decay", "transition_begin", static_cast<double>(transition_begin), ">= 0");
  return {[=](int64_t step) {
            require_step("polynomial_decay", step);
            const int64_t count = std::clamp<int64_t>(step - transition_begin, 0, transition_steps);
            const double frac = 1.0 - static_cast<double>(count) / static_cast<double>(transition_steps);
            return (init - end_value) * std::pow(frac, power) + end_value;
          },
          fmt::format("polynomial_decay(init={}, end_value={}, power={}, transition_steps={}, transition_begin={})", init,
                      end_value, power, transition_steps, transition_begin)};
}

Schedule step_decay(double init, int64_t step_size, double gamma) {
  require_init("step_decay", init);
  require(step_size > 0, "step_decay", "step_size", static_cast<double>(step_size), "> 0");
  require(std::isfinite(gamma) && gamma > 0.0, "step_decay", "gamma", gamma, "> 0");
  return {[=](int64_t step) {
            require_step("step_decay", step);
            return init * std::pow(gamma, static_cast<double>(step / step_size));
          },
          fmt::format("step_decay(init={}, step_size={}, gamma={})", init, step_size, gamma)};
}

Schedule linear_warmup(Schedule then, int64_t warmup_steps, double start_factor) {
  if (!then.fn) throw std::invalid_argument("linear_warmup: no schedule to warm up into");
  require(warmup_steps >= 0, "linear_warmup", "warmup_steps", static_cast<double>(warmup_steps), ">= 0");
  require(start_factor >= 0.0 && start_factor <= 1.0, "linear_warmup", "start_factor", start_factor, "0 <= value <= 1");
  std::string config = fmt::format("linear_warmup({}, warmup_steps={}, start_factor={})", then.config, warmup_steps, start_factor);
  auto fn = [then = std::move(then.fn), warmup_steps, start_factor](int64_t step) {
    require_step("linear_warmup", step);
    if (step >= warmup_steps) return then(step - warmup_steps);
    const double f = start_factor + (1.0 - start_factor) * static_cast<double>(step) / static_cast<double>(warmup_steps);
    return then(0) * f;
  };
  return {std::move(fn), std::move(config)};
}

Schedule parse_schedule(const std::string& spec, double init) {
  const size_t colon = spec.find(':');
  const std::string name = spec.substr(0, colon);
  std::map<std::string, std::string> kv;
  if (colon != std::string::npos) {
    std::string rest = spec.substr(colon + 1);
    size_t start = 0;
    while (start <= rest.size()) {
      size_t comma = rest.find(',', start);
      if (comma == std::string::npos) comma = rest.size();
      const std::string item = rest.substr(start, comma - start);
      const size_t eq = item.find('=');
      if (eq == std::string::npos || eq == 0)
        throw std::invalid_argument(fmt::format("lr schedule '{}': '{}' is not key=value", spec, item));
      kv[item.substr(0, eq)] = item.substr(eq + 1);
      start = comma + 1;
    }
  }
  auto take = [&](const char* key, double fallback) {
    auto it = kv.find(key);
    if (it == kv.end()) return fallback;
    size_t used = 0;
    double v = 0.0;
    try {
      v = std::stod(it->second, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != it->second.size())
      throw std::invalid_argument(fmt::format("lr schedule '{}': {} = '{}' is not a number", spec, key, it->second));
    kv.erase(it);
    return v;
  };
  auto take_int = [&](const char* key, int64_t fallback) {
    const double v = take(key, static_cast<double>(fallback));
    if (v != std::floor(v))
      throw std::invalid_argument(fmt::format("lr schedule '{}': {} = {} is not a whole number", spec, key, v));
    return static_cast<int64_t>(v);
  };
  const int64_t warmup = take_int("warmup", 0);
  const double warmup_start = take("warmup_start_factor", 0.0);
  Schedule s;
  if (name == "constant") s = constant(init);
  else if (name == "exponential")
    s = exponential_decay(init, take("decay_rate", 0.95), take_int("transition_steps", 10), take_int("transition_begin", 0),
                          take("staircase", 0.0) != 0.0);
  else if (name == "cosine") s = cosine_decay(init, take_int("decay_steps", 10), take("alpha", 0.0));
  else if (name == "cosine_restarts")
    s = cosine_warm_restarts(init, take_int("period_steps", 10), take_int("period_mult", 1), take("eta_min", 0.0));
  else if (name == "polynomial")
    s = polynomial_decay(init, take("end_value", 1e-3), take("power", 2.0), take_int("transition_steps", 10),
                         take_int("transition_begin", 0));
  else if (name == "step") s = step_decay(init, take_int("step_size", 10), take("gamma", 0.1));
  else
    throw std::invalid_argument(fmt::format(
        "lr schedule '{}': unknown schedule '{}' (expected constant, exponential, cosine, cosine_restarts, polynomial or step)",
        spec, name));
  if (!kv.empty())
    throw std::invalid_argument(fmt::format("lr schedule '{}': {} has no option '{}'", spec, name, kv.begin()->first));
  if (warmup > 0 || warmup_start != 0.0) s = linear_warmup(std::move(s), warmup, warmup_start);
  return s;
}

namespace {

class Scheduled final : public Optimizer {
 public:
  Scheduled(std::unique_ptr<Optimizer> inner, Schedule s)
      : Optimizer(s.fn ? std::max(0.0, s.fn(0)) : 0.0), inner_(std::move(inner)), s_(std::move(s)) {
    if (!inner_) throw std::invalid_argument("scheduled: no optimizer");
    if (!s_.fn) throw std::invalid_argument(fmt::format("{}: no schedule", inner_->name()));
  }
  std::string name() const override { return inner_->name(); }
  bool elementwise() const override { return inner_->elementwise(); }
  std::string config() const override { return fmt::format("{} with {}", inner_->config(), s_.config); }
  std::vector<std::pair<std::string, Tensor*>> state() override { return inner_->state(); }

 protected:
  void update(Tensor& p, const Tensor& g) override {
    if (capturable_)
      throw std::invalid_argument(fmt::format(
          "{}: a learning-rate schedule cannot run in capturable mode (a CUDA graph replays the first rate)", name()));
    const double lr = s_(steps_ - 1);
    if (!(lr >= 0.0) || !std::isfinite(lr))
      throw std::invalid_argument(fmt::format("{}: the schedule {} gave learning rate {} at step {}", name(), s_.config, lr, steps_ - 1));
    lr_ = lr;
    inner_->set_learning_rate(lr);
    inner_->set_steps(steps_ - 1);
    inner_->step(p, g);
    if (!nonfinite_.defined() || nonfinite_.device() != p.device()) nonfinite_ = Tensor::zeros({}, p.options());
    nonfinite_.copy_from(inner_->nonfinite_flag());
  }

 private:
  std::unique_ptr<Optimizer> inner_;
  Schedule s_;
};

}  // namespace

std::unique_ptr<Optimizer> scheduled(std::unique_ptr<Optimizer> optimizer, Schedule schedule) {
  return std::make_unique<Scheduled>(std::move(optimizer), std::move(schedule));
}

ReduceOnPlateau::ReduceOnPlateau(double lr, double factor, int64_t patience, double threshold, int64_t cooldown,
                                 double min_lr)
    : lr_(lr), factor_(factor), threshold_(threshold), min_lr_(min_lr), patience_(patience), cooldown_(cooldown),
      best_(std::numeric_limits<double>::infinity()) {
  require_init("reduce_on_plateau", lr);
  require(factor > 0.0 && factor < 1.0, "reduce_on_plateau", "factor", factor, "0 < factor < 1");
  require(patience >= 0, "reduce_on_plateau", "patience", static_cast<double>(patience), ">= 0");
  require(threshold >= 0.0, "reduce_on_plateau", "threshold", threshold, ">= 0");
  require(cooldown >= 0, "reduce_on_plateau", "cooldown", static_cast<double>(cooldown), ">= 0");
  require(min_lr >= 0.0, "reduce_on_plateau", "min_lr", min_lr, ">= 0");
}

double ReduceOnPlateau::update(double value) {
  if (value < best_ * (1.0 - threshold_)) {
    best_ = value;
    bad_ = 0;
  } else {
    ++bad_;
  }
  if (cooldown_left_ > 0) {
    --cooldown_left_;
    bad_ = 0;
  }
  if (bad_ > patience_) {
    lr_ = std::max(lr_ * factor_, min_lr_);
    cooldown_left_ = cooldown_;
    bad_ = 0;
  }
  return lr_;
}

}  // namespace axon
