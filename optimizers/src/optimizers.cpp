#include "axon/optimizers.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "axon/backend.h"
#include "axon/tensor.h"

namespace axon {

Optimizer::Optimizer(double lr) : lr_(lr) { set_learning_rate(lr); }

void Optimizer::set_learning_rate(double lr) {
  if (!(lr >= 0.0) || !std::isfinite(lr))
    throw std::invalid_argument(fmt::format("{}: learning rate must be a finite number >= 0, got {}", "optimizer", lr));
  check_float("learning rate", lr);
  lr_ = lr;
}

void Optimizer::check_float(const char* what, double value) {
  // The update kernels compute in f32: a value that rounds to 0 or overflows to inf there would
  // silently stop training or destroy the parameters.
  const double magnitude = std::fabs(value);
  if (magnitude != 0.0 && (magnitude < std::numeric_limits<float>::min() || magnitude > std::numeric_limits<float>::max()))
    throw std::invalid_argument(fmt::format(
        "optimizer: {} {} does not fit a 32-bit float, in which updates are computed (its magnitude must be 0 or "
        "between {:.3g} and {:.3g})",
        what, value, std::numeric_limits<float>::min(), std::numeric_limits<float>::max()));
}

void Optimizer::set_steps(int64_t steps) {
  if (steps < 0) throw std::invalid_argument(fmt::format("{}: step count must be >= 0, got {}", name(), steps));
  steps_ = steps;
  if (device_step_.defined()) device_step_.fill(static_cast<double>(steps));
}

void Optimizer::set_capturable(bool capturable) {
  capturable_ = capturable;
  if (!capturable) device_step_ = Tensor();
}

void Optimizer::step(std::span<float> params, std::span<const float> grads) {
  Tensor p = Tensor::from_blob(params.data(), {static_cast<int64_t>(params.size())});
  const Tensor g = Tensor::from_blob(const_cast<float*>(grads.data()), {static_cast<int64_t>(grads.size())});
  step(p, g);
}

void Optimizer::step(Tensor& params, const Tensor& grads) {
  if (params.numel() != grads.numel())
    throw std::invalid_argument(fmt::format("{}: {} parameters but {} gradients", name(), params.numel(), grads.numel()));
  if (params.dtype() != DType::f32 || grads.dtype() != DType::f32)
    throw std::invalid_argument(fmt::format("{}: parameters and gradients must be f32 (master weights), got {} and {}",
                                            name(), dtype_name(params.dtype()), dtype_name(grads.dtype())));
  if (params.device() != grads.device())
    throw std::invalid_argument(fmt::format("{}: parameters on {} but gradients on {}", name(), params.device().str(),
                                            grads.device().str()));
  const size_t n = static_cast<size_t>(params.numel());
  if (size_ == 0) size_ = n;
  else if (n != size_)
    throw std::invalid_argument(
        fmt::format("{}: stepped with {} parameters, but its state was made for {}", name(), n, size_));
  ++steps_;
  FlushDenormalsGuard flush_denormals;
  if (!nonfinite_.defined() || nonfinite_.device() != params.device())
    nonfinite_ = Tensor::zeros({}, {DType::f32, params.device()});
  else
    nonfinite_.fill(0.0);
  if (capturable_) {
    if (!device_step_.defined() || device_step_.device() != params.device())
      device_step_ = Tensor::full({}, static_cast<double>(steps_ - 1), {DType::f64, params.device()});
    backend(params.device()).unary(UnaryOp::add_scalar, device_step_, 1.0, device_step_);
  }
  update(params, grads);
}

Tensor& Optimizer::state_like(Tensor& buffer, const Tensor& params, const char* what) const {
  if (!buffer.defined()) {
    buffer = Tensor::zeros(params.shape(), params.options());
    return buffer;
  }
  if (buffer.numel() != params.numel() || buffer.dtype() != DType::f32 || buffer.device() != params.device())
    throw std::invalid_argument(fmt::format("{}: state '{}' holds {} {} values on {} for {} f32 parameters on {}", name(),
                                            what, buffer.numel(), dtype_name(buffer.dtype()), buffer.device().str(),
                                            params.numel(), params.device().str()));
  if (buffer.shape() != params.shape()) buffer = buffer.reshape(params.shape());
  return buffer;
}

namespace {

class Sgd final : public Optimizer {
 public:
  explicit Sgd(SgdOptions o) : Optimizer(o.lr), o_(o) {
    if (!(o.momentum >= 0 && o.weight_decay >= 0 && o.dampening >= 0 && o.dampening <= 1) ||
        (o.nesterov && (o.momentum <= 0 || o.dampening != 0)))
      throw std::invalid_argument(
          "sgd: need momentum, weight_decay >= 0 and 0 <= dampening <= 1; nesterov needs momentum > 0 and dampening 0");
    check_float("momentum", o.momentum);
    check_float("weight_decay", o.weight_decay);
  }
  std::string name() const override { return "sgd"; }
  bool elementwise() const override { return true; }
  std::string config() const override {
    return fmt::format("sgd(lr={}, momentum={}, dampening={}, weight_decay={}, nesterov={})", lr_, o_.momentum,
                       o_.dampening, o_.weight_decay, o_.nesterov);
  }
  std::vector<std::pair<std::string, Tensor*>> state() override {
    if (o_.momentum == 0.0) return {};
    return {{"momentum_buffer", &buf_}};
  }

 protected:
  void update(Tensor& p, const Tensor& g) override {
    SgdStep h{static_cast<float>(lr_), static_cast<float>(o_.weight_decay), static_cast<float>(o_.momentum),
              static_cast<float>(1.0 - o_.dampening), o_.nesterov, false};
    Tensor* buf = nullptr;
    if (o_.momentum != 0.0) {
      // PyTorch starts the buffer as a copy of the first gradient (no dampening on step 1).
      h.first = !buf_.defined();
      buf = &state_like(buf_, p, "momentum_buffer");
    }
    backend(p.device()).sgd_step(h, p, g, buf, nonfinite_);
  }

 private:
  SgdOptions o_;
  Tensor buf_;
};

class Adam final : public Optimizer {
 public:
  Adam(AdamOptions o, bool decoupled) : Optimizer(o.lr), o_(o), decoupled_(decoupled) {
    if (!(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1 && o.eps >= 0 && o.weight_decay >= 0))
      throw std::invalid_argument(fmt::format("{}: need 0 <= beta1, beta2 < 1 and eps, weight_decay >= 0", name()));
    check_float("eps", o.eps);
    check_float("weight_decay", o.weight_decay);
  }
  std::string name() const override { return decoupled_ ? "adamw" : "adam"; }
  bool elementwise() const override { return true; }
  std::string config() const override {
    return fmt::format("{}(lr={}, beta1={}, beta2={}, eps={}, weight_decay={}, amsgrad={})", name(), lr_, o_.beta1,
                       o_.beta2, o_.eps, o_.weight_decay, o_.amsgrad);
  }
  std::vector<std::pair<std::string, Tensor*>> state() override {
    std::vector<std::pair<std::string, Tensor*>> s{{"exp_avg", &m_}, {"exp_avg_sq", &v_}};
    if (o_.amsgrad) s.push_back({"max_exp_avg_sq", &vmax_});
    return s;
  }

 protected:
  void update(Tensor& p, const Tensor& g) override {
    Tensor& m = state_like(m_, p, "exp_avg");
    Tensor& v = state_like(v_, p, "exp_avg_sq");
    Tensor* vmax = o_.amsgrad ? &state_like(vmax_, p, "max_exp_avg_sq") : nullptr;
    // Scalars as PyTorch derives them: in double from the double hyperparameters, then rounded.
    const double t = static_cast<double>(steps_);
    AdamStep h;
    h.beta1 = static_cast<float>(o_.beta1);
    h.beta2 = static_cast<float>(o_.beta2);
    h.one_minus_beta1 = static_cast<float>(1.0 - o_.beta1);
    h.one_minus_beta2 = static_cast<float>(1.0 - o_.beta2);
    h.eps = static_cast<float>(o_.eps);
    h.step_size = static_cast<float>(lr_ / (1.0 - std::pow(o_.beta1, t)));
    h.bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(o_.beta2, t)));
    h.decay = decoupled_ ? static_cast<float>(1.0 - lr_ * o_.weight_decay) : 1.0f;
    h.l2 = decoupled_ ? 0.0f : static_cast<float>(o_.weight_decay);
    if (capturable_) {
      h.device_step = static_cast<const double*>(device_step_.raw_data());
      h.lr = lr_;
      h.beta1_exact = o_.beta1;
      h.beta2_exact = o_.beta2;
    }
    backend(p.device()).adam_step(h, p, g, m, v, vmax, nonfinite_);
  }

 private:
  AdamOptions o_;
  bool decoupled_;
  Tensor m_, v_, vmax_;
};

class ChainOptimizer final : public Optimizer {
 public:
  ChainOptimizer(std::string name, std::string options, double lr, TransformPtr t)
      : Optimizer(lr), name_(std::move(name)), options_(std::move(options)), t_(std::move(t)) {
    if (!t_) throw std::invalid_argument(fmt::format("{}: no transform", name_));
  }
  std::string name() const override { return name_; }
  std::string config() const override { return fmt::format("{}(lr={}, {})", name_, lr_, options_); }
  std::vector<std::pair<std::string, Tensor*>> state() override { return t_->state(); }

 protected:
  void update(Tensor& p, const Tensor& g) override {
    if (capturable_)
      throw std::invalid_argument(fmt::format(
          "{}: capturable mode (CUDA graphs) is implemented only by the fused sgd, adam and adamw", name_));
    Backend& be = backend(p.device());
    if (!u_.defined() || u_.device() != p.device()) {
      u_ = Tensor::empty(p.shape(), p.options());
      finite_ = Tensor::zeros({}, p.options());
    } else if (u_.shape() != p.shape()) {
      u_ = u_.reshape(p.shape());
    }
    be.cast(u_, g);
    t_->init(p);
    t_->apply(u_, StepContext{steps_, lr_, p});
    be.binary(BinaryOp::add, p, u_, p);
    // nonfinite = 1 - all_finite(p).
    be.all_finite(p, finite_);
    be.unary(UnaryOp::mul_scalar, finite_, -1.0, nonfinite_);
    be.unary(UnaryOp::add_scalar, nonfinite_, 1.0, nonfinite_);
  }

 private:
  std::string name_, options_;
  TransformPtr t_;
  Tensor u_, finite_;
};

class Grouped final : public Optimizer {
 public:
  Grouped(std::vector<std::pair<std::string, int64_t>> layout, std::vector<ParamGroup> groups,
          const std::function<std::unique_ptr<Optimizer>()>& rest)
      : Optimizer(0.0) {
    if (layout.empty()) throw std::invalid_argument("param_groups: empty layout");
    if (!rest) throw std::invalid_argument("param_groups: no optimizer for the remaining parameters");
    for (size_t i = 0; i < groups.size(); ++i)
      if (!groups[i].make) throw std::invalid_argument(fmt::format("param_groups: group {} makes no optimizer", i));
    base_lr_ = rest()->learning_rate();
    set_learning_rate(base_lr_);
    int64_t offset = 0;
    for (auto& [name, n] : layout) {
      if (n < 0) throw std::invalid_argument(fmt::format("param_groups: parameter '{}' has {} elements", name, n));
      const std::function<std::unique_ptr<Optimizer>()>* make = &rest;
      for (const ParamGroup& g : groups) {
        bool hit = false;
        for (const std::string& pattern : g.name_contains) hit = hit || name.find(pattern) != std::string::npos;
        if (hit) {
          make = &g.make;
          break;
        }
      }
      Part part{name, offset, n, (*make)(), 0.0};
      part.lr = part.opt->learning_rate();
      offset += n;
      parts_.push_back(std::move(part));
    }
    total_ = offset;
  }
  std::string name() const override { return "param_groups"; }
  std::string config() const override {
    std::string s = "param_groups(";
    for (size_t i = 0; i < parts_.size(); ++i) s += fmt::format("{}{}: {}", i ? ", " : "", parts_[i].name, parts_[i].opt->config());
    return s + ")";
  }
  std::vector<std::pair<std::string, Tensor*>> state() override {
    std::vector<std::pair<std::string, Tensor*>> s;
    for (Part& p : parts_)
      for (auto& [n, b] : p.opt->state()) s.push_back({p.name + "." + n, b});
    return s;
  }

 protected:
  void update(Tensor& p, const Tensor& g) override {
    if (p.numel() != total_)
      throw std::invalid_argument(fmt::format("param_groups: the layout holds {} elements, the buffer stepped {}", total_, p.numel()));
    const double ratio = base_lr_ > 0.0 ? lr_ / base_lr_ : 1.0;
    Backend& be = backend(p.device());
    for (Part& part : parts_) {
      if (part.n == 0) continue;
      Tensor pv = Tensor::view_of(p.storage(), p.offset() + static_cast<size_t>(part.offset), {part.n});
      Tensor gv = Tensor::view_of(g.storage(), g.offset() + static_cast<size_t>(part.offset), {part.n});
      part.opt->set_capturable(capturable_);
      part.opt->set_learning_rate(part.lr * ratio);
      part.opt->set_steps(steps_ - 1);
      part.opt->step(pv, gv);
      be.binary(BinaryOp::maximum, nonfinite_, part.opt->nonfinite_flag(), nonfinite_);
    }
  }

 private:
  struct Part {
    std::string name;
    int64_t offset, n;
    std::unique_ptr<Optimizer> opt;
    double lr;
  };
  std::vector<Part> parts_;
  int64_t total_ = 0;
  double base_lr_ = 0.0;
};

void require_option(bool ok, const char* optimizer, const char* option, double value, const char* rule) {
  if (!ok) throw std::invalid_argument(fmt::format("{}: option {} = {} is out of range (need {})", optimizer, option, value, rule));
}

}  // namespace

std::unique_ptr<Optimizer> sgd(SgdOptions options) { return std::make_unique<Sgd>(options); }
std::unique_ptr<Optimizer> adam(AdamOptions options) { return std::make_unique<Adam>(options, false); }
std::unique_ptr<Optimizer> adamw(AdamOptions options) { return std::make_unique<Adam>(options, true); }

std::unique_ptr<Optimizer> chain_optimizer(std::string name, double lr, TransformPtr transform) {
  std::string options = transform ? transform->config() : "";
  return std::make_unique<ChainOptimizer>(std::move(name), std::move(options), lr, std::move(transform));
}

std::unique_ptr<Optimizer> adagrad(AdagradOptions o) {
  require_option(o.lr_decay >= 0.0 && std::isfinite(o.lr_decay), "adagrad", "lr_decay", o.lr_decay, "a finite value >= 0");
  require_option(o.weight_decay >= 0.0, "adagrad", "weight_decay", o.weight_decay, ">= 0");
  const double lr_decay = o.lr_decay;
  auto lr = stateless(fmt::format("scale_by_learning_rate(lr_decay={})", lr_decay), [lr_decay](Tensor& u, const StepContext& c) {
    backend(u.device()).unary(UnaryOp::mul_scalar, u, -c.lr / (1.0 + static_cast<double>(c.step - 1) * lr_decay), u);
  });
  return std::make_unique<ChainOptimizer>(
      "adagrad",
      fmt::format("lr_decay={}, weight_decay={}, initial_accumulator_value={}, eps={}", o.lr_decay, o.weight_decay,
                  o.initial_accumulator_value, o.eps),
      o.lr, chain({add_decayed_weights(o.weight_decay), scale_by_rss(o.initial_accumulator_value, o.eps), lr}));
}

std::unique_ptr<Optimizer> rmsprop(RmspropOptions o) {
  require_option(o.weight_decay >= 0.0, "rmsprop", "weight_decay", o.weight_decay, ">= 0");
  require_option(o.momentum >= 0.0, "rmsprop", "momentum", o.momentum, ">= 0");
  require_option(!o.nesterov || o.momentum > 0.0, "rmsprop", "momentum", o.momentum, "> 0 with nesterov");
  std::vector<TransformPtr> t{add_decayed_weights(o.weight_decay),
                              o.centered ? scale_by_stddev(o.decay, o.eps, o.initial_scale)
                                         : scale_by_rms(o.decay, o.eps, o.initial_scale)};
  if (o.momentum > 0.0) t.push_back(trace(o.momentum, o.nesterov));
  t.push_back(scale_by_learning_rate());
  return std::make_unique<ChainOptimizer>(
      "rmsprop",
      fmt::format("decay={}, eps={}, weight_decay={}, momentum={}, centered={}, nesterov={}, initial_scale={}", o.decay,
                  o.eps, o.weight_decay, o.momentum, o.centered, o.nesterov, o.initial_scale),
      o.lr, chain(std::move(t)));
}

std::unique_ptr<Optimizer> radam(RadamOptions o) {
  require_option(o.weight_decay >= 0.0, "radam", "weight_decay", o.weight_decay, ">= 0");
  return std::make_unique<ChainOptimizer>(
      "radam",
      fmt::format("beta1={}, beta2={}, eps={}, weight_decay={}, threshold={}", o.beta1, o.beta2, o.eps, o.weight_decay,
                  o.threshold),
      o.lr,
      chain({add_decayed_weights(o.weight_decay), scale_by_radam(o.beta1, o.beta2, o.eps, o.threshold),
             scale_by_learning_rate()}));
}

std::unique_ptr<Optimizer> nadam(NadamOptions o) {
  require_option(o.weight_decay >= 0.0, "nadam", "weight_decay", o.weight_decay, ">= 0");
  return std::make_unique<ChainOptimizer>(
      "nadam",
      fmt::format("beta1={}, beta2={}, eps={}, weight_decay={}, momentum_decay={}", o.beta1, o.beta2, o.eps,
                  o.weight_decay, o.momentum_decay),
      o.lr,
      chain({add_decayed_weights(o.weight_decay), scale_by_nadam(o.beta1, o.beta2, o.eps, o.momentum_decay),
             scale_by_learning_rate()}));
}

std::unique_ptr<Optimizer> adamax(AdamaxOptions o) {
  require_option(o.weight_decay >= 0.0, "adamax", "weight_decay", o.weight_decay, ">= 0");
  return std::make_unique<ChainOptimizer>(
      "adamax", fmt::format("beta1={}, beta2={}, eps={}, weight_decay={}", o.beta1, o.beta2, o.eps, o.weight_decay),
      o.lr, chain({add_decayed_weights(o.weight_decay), scale_by_adamax(o.beta1, o.beta2, o.eps), scale_by_learning_rate()}));
}

std::unique_ptr<Optimizer> adabelief(AdabeliefOptions o) {
  require_option(o.weight_decay >= 0.0, "adabelief", "weight_decay", o.weight_decay, ">= 0");
  return std::make_unique<ChainOptimizer>(
      "adabelief",
      fmt::format("beta1={}, beta2={}, eps={}, eps_root={}, weight_decay={}", o.beta1, o.beta2, o.eps, o.eps_root,
                  o.weight_decay),
      o.lr,
      chain({scale_by_belief(o.beta1, o.beta2, o.eps, o.eps_root), add_decayed_weights(o.weight_decay),
             scale_by_learning_rate()}));
}

std::unique_ptr<Optimizer> fromage(FromageOptions o) {
  // u = -lr·mult·u + (mult - 1)·p with mult = 1/sqrt(1 + lr²), derived per step from the (possibly
  // scheduled) learning rate: optax's scale(-lr·mult) → add_decayed_weights(mult - 1).
  auto scratch = std::make_shared<Tensor>();
  auto step = stateless("fromage_step", [scratch](Tensor& u, const StepContext& c) {
    const double mult = 1.0 / std::sqrt(1.0 + c.lr * c.lr);
    Backend& be = backend(u.device());
    if (!scratch->defined() || scratch->numel() != u.numel() || scratch->device() != u.device())
      *scratch = Tensor::empty(u.shape(), u.options());
    Tensor s = scratch->shape() == u.shape() ? *scratch : scratch->reshape(u.shape());
    be.unary(UnaryOp::mul_scalar, u, -c.lr * mult, u);
    be.unary(UnaryOp::mul_scalar, c.params, mult - 1.0, s);
    be.binary(BinaryOp::add, u, s, u);
  });
  return std::make_unique<ChainOptimizer>("fromage", fmt::format("min_norm={}", o.min_norm), o.lr,
                                          chain({scale_by_trust_ratio(o.min_norm), step}));
}

std::unique_ptr<Optimizer> lamb(LambOptions o) {
  require_option(o.weight_decay >= 0.0, "lamb", "weight_decay", o.weight_decay, ">= 0");
  return std::make_unique<ChainOptimizer>(
      "lamb",
      fmt::format("beta1={}, beta2={}, eps={}, eps_root={}, weight_decay={}, min_norm={}", o.beta1, o.beta2, o.eps,
                  o.eps_root, o.weight_decay, o.min_norm),
      o.lr,
      chain({scale_by_adam(o.beta1, o.beta2, o.eps, o.eps_root), add_decayed_weights(o.weight_decay),
             scale_by_trust_ratio(o.min_norm), scale_by_learning_rate()}));
}

std::unique_ptr<Optimizer> noisy_sgd(NoisySgdOptions o) {
  return std::make_unique<ChainOptimizer>("noisy_sgd", fmt::format("eta={}, gamma={}, seed={}", o.eta, o.gamma, o.seed),
                                          o.lr, chain({scale_by_learning_rate(), add_noise(o.eta, o.gamma, o.seed)}));
}

std::unique_ptr<Optimizer> yogi(YogiOptions o) {
  return std::make_unique<ChainOptimizer>(
      "yogi",
      fmt::format("beta1={}, beta2={}, eps={}, eps_root={}, initial_accumulator_value={}", o.beta1, o.beta2, o.eps,
                  o.eps_root, o.initial_accumulator_value),
      o.lr,
      chain({scale_by_yogi(o.beta1, o.beta2, o.eps, o.eps_root, o.initial_accumulator_value), scale_by_learning_rate()}));
}

std::unique_ptr<Optimizer> lion(LionOptions o) {
  require_option(o.weight_decay >= 0.0, "lion", "weight_decay", o.weight_decay, ">= 0");
  return std::make_unique<ChainOptimizer>(
      "lion", fmt::format("beta1={}, beta2={}, weight_decay={}", o.beta1, o.beta2, o.weight_decay), o.lr,
      chain({scale_by_lion(o.beta1, o.beta2), add_decayed_weights(o.weight_decay), scale_by_learning_rate()}));
}

std::unique_ptr<Optimizer> param_groups(std::vector<std::pair<std::string, int64_t>> layout,
                                        std::vector<ParamGroup> groups,
                                        std::function<std::unique_ptr<Optimizer>()> rest) {
  return std::make_unique<Grouped>(std::move(layout), std::move(groups), rest);
}

const std::vector<std::string>& optimizer_names() {
  static const std::vector<std::string> names{"adabelief", "adagrad", "adam",   "adamax",    "adamw", "fromage", "lamb",
                                              "lion",      "nadam",   "noisy_sgd", "radam", "rmsprop", "sgd",   "yogi"};
  return names;
}

std::unique_ptr<Optimizer> make_optimizer(const std::string& name, double lr) {
  if (name == "sgd") return sgd({.lr = lr});
  if (name == "adam") return adam({.lr = lr});
  if (name == "adamw") return adamw({.lr = lr, .weight_decay = 1e-2});
  if (name == "adagrad") return adagrad({.lr = lr});
  if (name == "rmsprop") return rmsprop({.lr = lr});
  if (name == "radam") return radam({.lr = lr});
  if (name == "nadam") return nadam({.lr = lr});
  if (name == "adamax") return adamax({.lr = lr});
  if (name == "adabelief") return adabelief({.lr = lr});
  if (name == "fromage") return fromage({.lr = lr});
  if (name == "lamb") return lamb({.lr = lr});
  if (name == "noisy_sgd") return noisy_sgd({.lr = lr});
  if (name == "yogi") return yogi({.lr = lr});
  if (name == "lion") return lion({.lr = lr});
  std::string list;
  for (const std::string& n : optimizer_names()) list += (list.empty() ? "" : ", ") + n;
  throw std::invalid_argument(fmt::format("unknown optimizer '{}' (expected one of {})", name, list));
}

}  // namespace axon
