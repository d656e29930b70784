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
