#include "axon/optimizers.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "axon/tensor.h"

namespace axon {

Optimizer::Optimizer(double lr) : lr_(lr) { set_learning_rate(lr); }

void Optimizer::set_learning_rate(double lr) {
  if (!(lr >= 0.0) || !std::isfinite(lr))
    throw std::invalid_argument(fmt::format("{}: learning rate must be a finite number >= 0, got {}", "optimizer", lr));
  lr_ = lr;
}

void Optimizer::set_steps(int64_t steps) {
  if (steps < 0) throw std::invalid_argument(fmt::format("{}: step count must be >= 0, got {}", name(), steps));
  steps_ = steps;
}

void Optimizer::step(std::span<float> params, std::span<const float> grads) {
  if (params.size() != grads.size())
    throw std::invalid_argument(fmt::format("{}: {} parameters but {} gradients", name(), params.size(), grads.size()));
  if (size_ == 0) size_ = params.size();
  else if (params.size() != size_)
    throw std::invalid_argument(
        fmt::format("{}: stepped with {} parameters, but its state was made for {}", name(), params.size(), size_));
  ++steps_;
  FlushDenormalsGuard flush_denormals;
  update(params, grads);
}

void Optimizer::check_state(const std::vector<float>& buffer, size_t n, const char* what) const {
  if (!buffer.empty() && buffer.size() != n)
    throw std::invalid_argument(
        fmt::format("{}: state '{}' holds {} values for {} parameters", name(), what, buffer.size(), n));
}

namespace {

class Sgd final : public Optimizer {
 public:
  explicit Sgd(SgdOptions o) : Optimizer(o.lr), o_(o) {
    if (!(o.momentum >= 0 && o.weight_decay >= 0 && o.dampening >= 0 && o.dampening <= 1) ||
        (o.nesterov && (o.momentum <= 0 || o.dampening != 0)))
      throw std::invalid_argument(
          "sgd: need momentum, weight_decay >= 0 and 0 <= dampening <= 1; nesterov needs momentum > 0 and dampening 0");
  }
  std::string name() const override { return "sgd"; }
  std::string config() const override {
    return fmt::format("sgd(lr={}, momentum={}, dampening={}, weight_decay={}, nesterov={})", lr_, o_.momentum,
                       o_.dampening, o_.weight_decay, o_.nesterov);
  }
  std::vector<std::pair<std::string, std::vector<float>*>> state() override {
    if (o_.momentum == 0.0f) return {};
    return {{"momentum_buffer", &buf_}};
  }

 protected:
  void update(std::span<float> p, std::span<const float> g) override {
    const size_t n = p.size();
    const float lr = static_cast<float>(lr_), wd = static_cast<float>(o_.weight_decay);
    const float mom = static_cast<float>(o_.momentum), keep = static_cast<float>(1.0 - o_.dampening);
    if (o_.momentum == 0.0) {
      for (size_t i = 0; i < n; ++i) {
        const float d = g[i] + wd * p[i];
        p[i] -= lr * d;
      }
      return;
    }
    check_state(buf_, n, "momentum_buffer");
    const bool first = buf_.empty();
    if (first) buf_.resize(n);
    for (size_t i = 0; i < n; ++i) {
      float d = wd != 0.0f ? g[i] + wd * p[i] : g[i];
      // PyTorch starts the buffer as a copy of the first gradient (no dampening on step 1).
      const float b = first ? d : buf_[i] * mom + keep * d;
      buf_[i] = b;
      d = o_.nesterov ? d + mom * b : b;
      p[i] -= lr * d;
    }
  }

 private:
  SgdOptions o_;
  std::vector<float> buf_;
};

class Adam final : public Optimizer {
 public:
  Adam(AdamOptions o, bool decoupled) : Optimizer(o.lr), o_(o), decoupled_(decoupled) {
    if (!(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1 && o.eps >= 0 && o.weight_decay >= 0))
      throw std::invalid_argument(fmt::format("{}: need 0 <= beta1, beta2 < 1 and eps, weight_decay >= 0", name()));
  }
  std::string name() const override { return decoupled_ ? "adamw" : "adam"; }
  std::string config() const override {
    return fmt::format("{}(lr={}, beta1={}, beta2={}, eps={}, weight_decay={}, amsgrad={})", name(), lr_, o_.beta1,
                       o_.beta2, o_.eps, o_.weight_decay, o_.amsgrad);
  }
  std::vector<std::pair<std::string, std::vector<float>*>> state() override {
    std::vector<std::pair<std::string, std::vector<float>*>> s{{"exp_avg", &m_}, {"exp_avg_sq", &v_}};
    if (o_.amsgrad) s.push_back({"max_exp_avg_sq", &vmax_});
    return s;
  }

 protected:
  void update(std::span<float> p, std::span<const float> g) override {
    const size_t n = p.size();
    check_state(m_, n, "exp_avg");
    check_state(v_, n, "exp_avg_sq");
    if (o_.amsgrad) check_state(vmax_, n, "max_exp_avg_sq");
    if (m_.empty()) m_.assign(n, 0.0f);
    if (v_.empty()) v_.assign(n, 0.0f);
    if (o_.amsgrad && vmax_.empty()) vmax_.assign(n, 0.0f);
    // Scalars as PyTorch derives them: in double from the double hyperparameters, then rounded.
    const double t = static_cast<double>(steps_);
    const float b1 = static_cast<float>(o_.beta1), b2 = static_cast<float>(o_.beta2);
    const float one_minus_b1 = static_cast<float>(1.0 - o_.beta1), one_minus_b2 = static_cast<float>(1.0 - o_.beta2);
    const float eps = static_cast<float>(o_.eps);
    const float step_size = static_cast<float>(lr_ / (1.0 - std::pow(o_.beta1, t)));
    const float bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(o_.beta2, t)));
    const float decay = decoupled_ ? static_cast<float>(1.0 - lr_ * o_.weight_decay) : 1.0f;
    const float l2 = decoupled_ ? 0.0f : static_cast<float>(o_.weight_decay);
    // Local restrict pointers and one loop per variant, so the compiler vectorizes each.
    float* __restrict pp = p.data();
    const float* __restrict pg = g.data();
    float* __restrict pm = m_.data();
    float* __restrict pv = v_.data();
    if (!o_.amsgrad) {
      for (size_t i = 0; i < n; ++i) {
        const float grad = pg[i] + l2 * pp[i];
        const float m = pm[i] * b1 + one_minus_b1 * grad;
        const float v = pv[i] * b2 + one_minus_b2 * grad * grad;
        pm[i] = m;
        pv[i] = v;
        const float denom = std::sqrt(v) / bc2_sqrt + eps;
        pp[i] = pp[i] * decay - step_size * (m / denom);
      }
      return;
    }
    float* __restrict pmax = vmax_.data();
    for (size_t i = 0; i < n; ++i) {
      const float grad = pg[i] + l2 * pp[i];
      const float m = pm[i] * b1 + one_minus_b1 * grad;
      const float v = pv[i] * b2 + one_minus_b2 * grad * grad;
      pm[i] = m;
      pv[i] = v;
      const float vmax = std::max(pmax[i], v);
      pmax[i] = vmax;
      const float denom = std::sqrt(vmax) / bc2_sqrt + eps;
      pp[i] = pp[i] * decay - step_size * (m / denom);
    }
  }

 private:
  AdamOptions o_;
  bool decoupled_;
  std::vector<float> m_, v_, vmax_;
};

}  // namespace

std::unique_ptr<Optimizer> sgd(SgdOptions options) { return std::make_unique<Sgd>(options); }
std::unique_ptr<Optimizer> adam(AdamOptions options) { return std::make_unique<Adam>(options, false); }
std::unique_ptr<Optimizer> adamw(AdamOptions options) { return std::make_unique<Adam>(options, true); }

std::unique_ptr<Optimizer> make_optimizer(const std::string& name, double lr) {
  if (name == "sgd") return sgd({.lr = lr});
  if (name == "adam") return adam({.lr = lr});
  if (name == "adamw") return adamw({.lr = lr, .weight_decay = 1e-2});
  throw std::invalid_argument(fmt::format("unknown optimizer '{}' (expected sgd, adam or adamw)", name));
}

}  // namespace axon
