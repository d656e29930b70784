#include "axon/transforms.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <numbers>
#include <span>
#include <stdexcept>

#include "axon/autograd.h"
#include "axon/backend.h"
#include "axon/ops.h"

namespace axon {

namespace {

Backend& be(const Tensor& t) { return backend(t.device()); }
void unary(UnaryOp op, const Tensor& x, Tensor& out, double s = 0.0) { be(out).unary(op, x, s, out); }
void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) { be(out).binary(op, a, b, out); }
void mul_s(Tensor& x, double s) { unary(UnaryOp::mul_scalar, x, x, s); }
void add_s(Tensor& x, double s) { unary(UnaryOp::add_scalar, x, x, s); }
void copy(Tensor& dst, const Tensor& src) { be(dst).cast(dst, src); }
// y = a·y + b·x (the scratch holds b·x).
void ema(Tensor& y, double a, const Tensor& x, double b, Tensor& scratch) {
  unary(UnaryOp::mul_scalar, x, scratch, b);
  mul_s(y, a);
  binary(BinaryOp::add, y, scratch, y);
}
// Σ x², read on the host.
double sum_squares(const Tensor& x, Tensor& scratch, Tensor& scalar) {
  unary(UnaryOp::square, x, scratch);
  be(x).sum_all(scratch, scalar);
  float value = 0.0f;  // read without a temporary tensor (a step allocates nothing)
  copy_bytes(Device::cpu(), &value, scalar.device(), scalar.raw_data(), sizeof value);
  return value;
}

void require(bool ok, const std::string& transform, const char* option, double value, const char* rule) {
  if (!ok) throw std::invalid_argument(fmt::format("{}: option {} = {} is out of range (need {})", transform, option, value, rule));
  const double m = std::fabs(value);
  if (m != 0.0 && std::isfinite(m) && (m < std::numeric_limits<float>::min() || m > std::numeric_limits<float>::max()))
    throw std::invalid_argument(fmt::format("{}: option {} = {} does not fit a 32-bit float, in which updates are computed",
                                            transform, option, value));
}
void require_beta(const std::string& t, const char* option, double v) {
  require(v >= 0.0 && v < 1.0, t, option, v, "0 <= value < 1");
}
void require_nonneg(const std::string& t, const char* option, double v) {
  require(v >= 0.0 && std::isfinite(v), t, option, v, "a finite value >= 0");
}

// A transform with state buffers like the parameters and scratch buffers of its own.
class Stateful : public Transform {
 public:
  explicit Stateful(std::string name) : name_(std::move(name)) {}
  std::vector<std::pair<std::string, Tensor*>> state() override {
    std::vector<std::pair<std::string, Tensor*>> s;
    for (auto& [n, b] : buffers_) s.push_back({n, &b});
    return s;
  }
  void init(const Tensor& params) override {
    for (size_t i = 0; i < buffers_.size(); ++i) {
      Tensor& b = buffers_[i].second;
      if (!b.defined()) {
        b = Tensor::full(params.shape(), initial_[i], params.options());
        continue;
      }
      if (b.numel() != params.numel() || b.dtype() != DType::f32 || b.device() != params.device())
        throw std::invalid_argument(fmt::format("{}: state '{}' holds {} {} values on {} for {} f32 parameters on {}",
                                                name_, buffers_[i].first, b.numel(), dtype_name(b.dtype()),
                                                b.device().str(), params.numel(), params.device().str()));
      if (b.shape() != params.shape()) b = b.reshape(params.shape());
    }
    for (Tensor& s : scratch_)
      if (!s.defined() || s.numel() != params.numel() || s.device() != params.device())
        s = Tensor::empty(params.shape(), params.options());
      else if (s.shape() != params.shape())
        s = s.reshape(params.shape());
  }

 protected:
  void add_state(const char* name, double initial = 0.0) {
    buffers_.push_back({name, Tensor()});
    initial_.push_back(initial);
  }
  Tensor& buf(size_t i) { return buffers_[i].second; }
  std::string name_;
  std::vector<std::pair<std::string, Tensor>> buffers_;
  std::vector<double> initial_;
  std::vector<Tensor> scratch_;  // sized in init
};

class Chain final : public Transform {
 public:
  explicit Chain(std::vector<TransformPtr> t) : t_(std::move(t)) {
    for (size_t i = 0; i < t_.size(); ++i)
      if (!t_[i]) throw std::invalid_argument(fmt::format("chain: transform {} is null", i));
  }
  std::string config() const override {
    std::string s = "chain(";
    for (size_t i = 0; i < t_.size(); ++i) s += (i ? ", " : "") + t_[i]->config();
    return s + ")";
  }
  void init(const Tensor& params) override {
    for (auto& t : t_) t->init(params);
  }
  void apply(Tensor& u, const StepContext& ctx) override {
    for (auto& t : t_) t->apply(u, ctx);
  }
  std::vector<std::pair<std::string, Tensor*>> state() override {
    std::vector<std::pair<std::string, Tensor*>> s;
    for (size_t i = 0; i < t_.size(); ++i)
      for (auto& [n, b] : t_[i]->state()) s.push_back({fmt::format("{}.{}", i, n), b});
    return s;
  }

 private:
  std::vector<TransformPtr> t_;
};

class Stateless final : public Transform {
 public:
  Stateless(std::string config, std::function<void(Tensor&, const StepContext&)> fn)
      : config_(std::move(config)), fn_(std::move(fn)) {}
  std::string config() const override { return config_; }
  void apply(Tensor& u, const StepContext& ctx) override { fn_(u, ctx); }

 private:
  std::string config_;
  std::function<void(Tensor&, const StepContext&)> fn_;
};

class Adam final : public Stateful {
 public:
  Adam(double b1, double b2, double eps, double eps_root) : Stateful("scale_by_adam"), b1_(b1), b2_(b2), eps_(eps), eps_root_(eps_root) {
    require_beta(name_, "b1", b1);
    require_beta(name_, "b2", b2);
    require_nonneg(name_, "eps", eps);
    require_nonneg(name_, "eps_root", eps_root);
    add_state("exp_avg");
    add_state("exp_avg_sq");
    scratch_.resize(1);
  }
  std::string config() const override {
    return fmt::format("scale_by_adam(b1={}, b2={}, eps={}, eps_root={})", b1_, b2_, eps_, eps_root_);
  }
  void apply(Tensor& u, const StepContext& ctx) override {
    Tensor &m = buf(0), &v = buf(1), &s = scratch_[0];
    const double t = static_cast<double>(ctx.step);
    ema(m, b1_, u, 1.0 - b1_, s);
    unary(UnaryOp::square, u, s);
    ema(v, b2_, s, 1.0 - b2_, s);
    unary(UnaryOp::mul_scalar, v, s, 1.0 / (1.0 - std::pow(b2_, t)));
    if (eps_root_ != 0.0) add_s(s, eps_root_);
    unary(UnaryOp::sqrt, s, s);
    add_s(s, eps_);
    binary(BinaryOp::div, m, s, u);
    mul_s(u, 1.0 / (1.0 - std::pow(b1_, t)));
  }

 private:
  double b1_, b2_, eps_, eps_root_;
};

class Belief final : public Stateful {
 public:
  Belief(double b1, double b2, double eps, double eps_root)
      : Stateful("scale_by_belief"), b1_(b1), b2_(b2), eps_(eps), eps_root_(eps_root) {
    require_beta(name_, "b1", b1);
    require_beta(name_, "b2", b2);
    require_nonneg(name_, "eps", eps);
    require_nonneg(name_, "eps_root", eps_root);
    add_state("exp_avg");
    add_state("exp_avg_var");
    scratch_.resize(1);
  }
  std::string config() const override {
    return fmt::format("scale_by_belief(b1={}, b2={}, eps={}, eps_root={})", b1_, b2_, eps_, eps_root_);
  }
  void apply(Tensor& u, const StepContext& ctx) override {
    Tensor &m = buf(0), &v = buf(1), &s = scratch_[0];
    const double t = static_cast<double>(ctx.step);
    ema(m, b1_, u, 1.0 - b1_, s);
    binary(BinaryOp::sub, u, m, s);
    unary(UnaryOp::square, s, s);
    ema(v, b2_, s, 1.0 - b2_, s);
    if (eps_root_ != 0.0) add_s(v, eps_root_);
    unary(UnaryOp::mul_scalar, v, s, 1.0 / (1.0 - std::pow(b2_, t)));
    unary(UnaryOp::sqrt, s, s);
    add_s(s, eps_);
    binary(BinaryOp::div, m, s, u);
    mul_s(u, 1.0 / (1.0 - std::pow(b1_, t)));
  }

 private:
  double b1_, b2_, eps_, eps_root_;
};

class Rss final : public Stateful {
 public:
  Rss(double initial, double eps) : Stateful("scale_by_rss"), initial_value_(initial), eps_(eps) {
    require_nonneg(name_, "initial_accumulator_value", initial);
    require_nonneg(name_, "eps", eps);
    add_state("sum", initial);
    scratch_.resize(1);
  }
  std::string config() const override {
    return fmt::format("scale_by_rss(initial_accumulator_value={}, eps={})", initial_value_, eps_);
  }
  void apply(Tensor& u, const StepContext&) override {
    Tensor &sum = buf(0), &s = scratch_[0];
    unary(UnaryOp::square, u, s);
    binary(BinaryOp::add, sum, s, sum);
    unary(UnaryOp::sqrt, sum, s);
    add_s(s, eps_);
    binary(BinaryOp::div, u, s, u);
  }

 private:
  double initial_value_, eps_;
};

class Rms final : public Stateful {
 public:
  Rms(double decay, double eps, double initial, bool centered)
      : Stateful(centered ? "scale_by_stddev" : "scale_by_rms"), decay_(decay), eps_(eps), initial_scale_(initial),
        centered_(centered) {
    require(decay >= 0.0 && decay <= 1.0, name_, "decay", decay, "0 <= value <= 1");
    require_nonneg(name_, "eps", eps);
    require_nonneg(name_, "initial_scale", initial);
    add_state("square_avg", initial);
    if (centered) add_state("grad_avg");
    scratch_.resize(1);
  }
  std::string config() const override {
    return fmt::format("{}(decay={}, eps={}, initial_scale={})", name_, decay_, eps_, initial_scale_);
  }
  void apply(Tensor& u, const StepContext&) override {
    Tensor &v = buf(0), &s = scratch_[0];
    unary(UnaryOp::square, u, s);
    ema(v, decay_, s, 1.0 - decay_, s);
    if (centered_) {
      Tensor& g = buf(1);
      ema(g, decay_, u, 1.0 - decay_, s);
      unary(UnaryOp::square, g, s);
      binary(BinaryOp::sub, v, s, s);
      unary(UnaryOp::sqrt, s, s);
    } else {
      unary(UnaryOp::sqrt, v, s);
    }
    add_s(s, eps_);
    binary(BinaryOp::div, u, s, u);
  }

 private:
  double decay_, eps_, initial_scale_;
  bool centered_;
};

class RAdam final : public Stateful {
 public:
  RAdam(double b1, double b2, double eps, double threshold)
      : Stateful("scale_by_radam"), b1_(b1), b2_(b2), eps_(eps), threshold_(threshold) {
    require_beta(name_, "b1", b1);
    require_beta(name_, "b2", b2);
    require_nonneg(name_, "eps", eps);
    require_nonneg(name_, "threshold", threshold);
    add_state("exp_avg");
    add_state("exp_avg_sq");
    scratch_.resize(1);
  }
  std::string config() const override {
    return fmt::format("scale_by_radam(b1={}, b2={}, eps={}, threshold={})", b1_, b2_, eps_, threshold_);
  }
  void apply(Tensor& u, const StepContext& ctx) override {
    Tensor &m = buf(0), &v = buf(1), &s = scratch_[0];
    const double t = static_cast<double>(ctx.step);
    const double bc1 = 1.0 - std::pow(b1_, t), bc2 = 1.0 - std::pow(b2_, t);
    ema(m, b1_, u, 1.0 - b1_, s);
    unary(UnaryOp::square, u, s);
    ema(v, b2_, s, 1.0 - b2_, s);
    const double rho_inf = 2.0 / (1.0 - b2_) - 1.0;
    const double rho_t = rho_inf - 2.0 * t * std::pow(b2_, t) / bc2;
    if (rho_t > threshold_) {
      const double rect =
          std::sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t));
      unary(UnaryOp::sqrt, v, s);
      add_s(s, eps_);
      binary(BinaryOp::div, m, s, u);
      mul_s(u, std::sqrt(bc2) * rect / bc1);
    } else {
      unary(UnaryOp::mul_scalar, m, u, 1.0 / bc1);
    }
  }

 private:
  double b1_, b2_, eps_, threshold_;
};

class NAdam final : public Stateful {
 public:
  NAdam(double b1, double b2, double eps, double momentum_decay)
      : Stateful("scale_by_nadam"), b1_(b1), b2_(b2), eps_(eps), momentum_decay_(momentum_decay) {
    require_beta(name_, "b1", b1);
    require_beta(name_, "b2", b2);
    require_nonneg(name_, "eps", eps);
    require_nonneg(name_, "momentum_decay", momentum_decay);
    add_state("exp_avg");
    add_state("exp_avg_sq");
    scratch_.resize(2);
  }
  std::string config() const override {
    return fmt::format("scale_by_nadam(b1={}, b2={}, eps={}, momentum_decay={})", b1_, b2_, eps_, momentum_decay_);
  }
  void apply(Tensor& u, const StepContext& ctx) override {
    Tensor &m = buf(0), &v = buf(1), &s = scratch_[0], &d = scratch_[1];
    const double t = static_cast<double>(ctx.step);
    // Π_{k<=t} mu_k, a function of t alone (so a restored step count restores it).
    if (ctx.step != product_step_) {
      mu_product_ = 1.0;
      for (int64_t k = 1; k <= ctx.step; ++k) mu_product_ *= mu(static_cast<double>(k));
      product_step_ = ctx.step;
    }
    const double mu_t = mu(t), mu_next = mu(t + 1.0);
    const double c1 = (1.0 - mu_t) / (1.0 - mu_product_);
    const double c2 = mu_next / (1.0 - mu_product_ * mu_next);
    ++product_step_;
    mu_product_ *= mu_next;
    ema(m, b1_, u, 1.0 - b1_, s);
    unary(UnaryOp::square, u, s);
    ema(v, b2_, s, 1.0 - b2_, s);
    unary(UnaryOp::mul_scalar, v, d, 1.0 / (1.0 - std::pow(b2_, t)));
    unary(UnaryOp::sqrt, d, d);
    add_s(d, eps_);
    binary(BinaryOp::div, m, d, s);
    mul_s(s, c2);
    binary(BinaryOp::div, u, d, u);
    mul_s(u, c1);
    binary(BinaryOp::add, u, s, u);
  }

 private:
  double mu(double t) const { return b1_ * (1.0 - 0.5 * std::pow(0.96, t * momentum_decay_)); }
  double b1_, b2_, eps_, momentum_decay_;
  int64_t product_step_ = -1;
  double mu_product_ = 1.0;
};

class Adamax final : public Stateful {
 public:
  Adamax(double b1, double b2, double eps) : Stateful("scale_by_adamax"), b1_(b1), b2_(b2), eps_(eps) {
    require_beta(name_, "b1", b1);
    require_beta(name_, "b2", b2);
    require_nonneg(name_, "eps", eps);
    add_state("exp_avg");
    add_state("exp_inf");
    scratch_.resize(1);
  }
  std::string config() const override { return fmt::format("scale_by_adamax(b1={}, b2={}, eps={})", b1_, b2_, eps_); }
  void apply(Tensor& u, const StepContext& ctx) override {
    Tensor &m = buf(0), &n = buf(1), &s = scratch_[0];
    ema(m, b1_, u, 1.0 - b1_, s);
    unary(UnaryOp::abs, u, s);
    add_s(s, eps_);
    mul_s(n, b2_);
    binary(BinaryOp::maximum, n, s, n);
    binary(BinaryOp::div, m, n, u);
    mul_s(u, 1.0 / (1.0 - std::pow(b1_, static_cast<double>(ctx.step))));
  }

 private:
  double b1_, b2_, eps_;
};

class Yogi final : public Stateful {
 public:
  Yogi(double b1, double b2, double eps, double eps_root, double initial)
      : Stateful("scale_by_yogi"), b1_(b1), b2_(b2), eps_(eps), eps_root_(eps_root), initial_value_(initial) {
    require_beta(name_, "b1", b1);
    require_beta(name_, "b2", b2);
    require_nonneg(name_, "eps", eps);
    require_nonneg(name_, "eps_root", eps_root);
    require_nonneg(name_, "initial_accumulator_value", initial);
    add_state("exp_avg", initial);
    add_state("exp_avg_sq", initial);
    scratch_.resize(2);
  }
  std::string config() const override {
    return fmt::format("scale_by_yogi(b1={}, b2={}, eps={}, eps_root={}, initial_accumulator_value={})", b1_, b2_,
                       eps_, eps_root_, initial_value_);
  }
  void apply(Tensor& u, const StepContext& ctx) override {
    Tensor &m = buf(0), &v = buf(1), &s = scratch_[0], &q = scratch_[1];
    const double t = static_cast<double>(ctx.step);
    ema(m, b1_, u, 1.0 - b1_, s);
    unary(UnaryOp::square, u, q);
    binary(BinaryOp::sub, v, q, s);
    unary(UnaryOp::sign, s, s);
    binary(BinaryOp::mul, s, q, s);
    mul_s(s, 1.0 - b2_);
    binary(BinaryOp::sub, v, s, v);
    unary(UnaryOp::mul_scalar, v, s, 1.0 / (1.0 - std::pow(b2_, t)));
    if (eps_root_ != 0.0) add_s(s, eps_root_);
    unary(UnaryOp::sqrt, s, s);
    add_s(s, eps_);
    binary(BinaryOp::div, m, s, u);
    mul_s(u, 1.0 / (1.0 - std::pow(b1_, t)));
  }

 private:
  double b1_, b2_, eps_, eps_root_, initial_value_;
};

class Lion final : public Stateful {
 public:
  Lion(double b1, double b2) : Stateful("scale_by_lion"), b1_(b1), b2_(b2) {
    require(b1 >= 0.0 && b1 <= 1.0, name_, "b1", b1, "0 <= value <= 1");
    require_beta(name_, "b2", b2);
    add_state("exp_avg");
    scratch_.resize(2);
  }
  std::string config() const override { return fmt::format("scale_by_lion(b1={}, b2={})", b1_, b2_); }
  void apply(Tensor& u, const StepContext&) override {
    Tensor &m = buf(0), &c = scratch_[0], &s = scratch_[1];
    unary(UnaryOp::mul_scalar, m, c, b1_);
    unary(UnaryOp::mul_scalar, u, s, 1.0 - b1_);
    binary(BinaryOp::add, c, s, c);
    ema(m, b2_, u, 1.0 - b2_, s);
    unary(UnaryOp::sign, c, u);
  }

 private:
  double b1_, b2_;
};

class TrustRatio final : public Stateful {
 public:
  TrustRatio(double min_norm, double coefficient, double eps)
      : Stateful("scale_by_trust_ratio"), min_norm_(min_norm), coefficient_(coefficient), eps_(eps) {
    require_nonneg(name_, "min_norm", min_norm);
    require_nonneg(name_, "trust_coefficient", coefficient);
    require_nonneg(name_, "eps", eps);
    scratch_.resize(1);
  }
  std::string config() const override {
    return fmt::format("scale_by_trust_ratio(min_norm={}, trust_coefficient={}, eps={})", min_norm_, coefficient_, eps_);
  }
  void apply(Tensor& u, const StepContext& ctx) override {
    if (!scalar_.defined() || scalar_.device() != u.device()) scalar_ = Tensor::zeros({}, u.options());
    const double p = std::max(std::sqrt(sum_squares(ctx.params, scratch_[0], scalar_)), min_norm_);
    const double n = std::max(std::sqrt(sum_squares(u, scratch_[0], scalar_)), min_norm_);
    if (p == 0.0 || n == 0.0) return;
    mul_s(u, coefficient_ * p / (n + eps_));
  }

 private:
  double min_norm_, coefficient_, eps_;
  Tensor scalar_;
};

class Trace final : public Stateful {
 public:
  Trace(double decay, bool nesterov) : Stateful("trace"), decay_(decay), nesterov_(nesterov) {
    require_nonneg(name_, "decay", decay);
    add_state("momentum_buffer");
    scratch_.resize(1);
  }
  std::string config() const override { return fmt::format("trace(decay={}, nesterov={})", decay_, nesterov_); }
  void apply(Tensor& u, const StepContext&) override {
    Tensor &t = buf(0), &s = scratch_[0];
    mul_s(t, decay_);
    binary(BinaryOp::add, t, u, t);
    if (nesterov_) {
      unary(UnaryOp::mul_scalar, t, s, decay_);
      binary(BinaryOp::add, u, s, u);
    } else {
      copy(u, t);
    }
  }

 private:
  double decay_;
  bool nesterov_;
};

class DecayedWeights final : public Stateful {
 public:
  explicit DecayedWeights(double decay) : Stateful("add_decayed_weights"), decay_(decay) {
    require(std::isfinite(decay), name_, "decay", decay, "a finite value");
    scratch_.resize(1);
  }
  std::string config() const override { return fmt::format("add_decayed_weights(decay={})", decay_); }
  void apply(Tensor& u, const StepContext& ctx) override {
    if (decay_ == 0.0) return;
    unary(UnaryOp::mul_scalar, ctx.params, scratch_[0], decay_);
    binary(BinaryOp::add, u, scratch_[0], u);
  }

 private:
  double decay_;
};

class Noise final : public Transform {
 public:
  Noise(double eta, double gamma, uint64_t seed) : eta_(eta), gamma_(gamma), seed_(seed) {
    require_nonneg("add_noise", "eta", eta);
    require_nonneg("add_noise", "gamma", gamma);
  }
  std::string config() const override { return fmt::format("add_noise(eta={}, gamma={}, seed={})", eta_, gamma_, seed_); }
  void apply(Tensor& u, const StepContext& ctx) override {
    const double stddev = std::sqrt(eta_ / std::pow(static_cast<double>(ctx.step), gamma_));
    if (!host_.defined() || host_.numel() != u.numel()) host_ = Tensor::empty({u.numel()});
    fill_noise(host_.values(), seed_, static_cast<uint64_t>(ctx.step), static_cast<float>(stddev));
    if (u.device() == Device::cpu()) {
      binary(BinaryOp::add, u, host_.reshape(u.shape()), u);  // nothing allocated
    } else {
      Tensor noise = host_.to(u.device()).reshape(u.shape());
      binary(BinaryOp::add, u, noise, u);
    }
  }
  // Counter-based, so any step's noise is drawn without the ones before (a resumed run draws the
  // same): key = mix(seed + mix(t)); element i takes r1 = mix(key + 2i), r2 = mix(key + 2i + 1),
  // u1 = 1 - (r1 >> 40)·2^-24, u2 = (r2 >> 40)·2^-24 and, in float, sd·sqrt(-2 ln u1)·cos(2π u2)
  // (Box-Muller). mix is SplitMix64's finalizer (Steele et al. 2014).
  static void fill_noise(std::span<float> out, uint64_t seed, uint64_t step, float sd) {
    auto mix = [](uint64_t z) {
      z += 0x9E3779B97F4A7C15ull;
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      return z ^ (z >> 31);
    };
    const uint64_t key = mix(seed + mix(step));
    for (size_t i = 0; i < out.size(); ++i) {
      const float u1 = 1.0f - static_cast<float>(mix(key + 2 * i) >> 40) * 0x1.0p-24f;
      const float u2 = static_cast<float>(mix(key + 2 * i + 1) >> 40) * 0x1.0p-24f;
      out[i] = sd * (std::sqrt(-2.0f * std::log(u1)) * std::cos(2.0f * std::numbers::pi_v<float> * u2));
    }
  }

 private:
  double eta_, gamma_;
  uint64_t seed_;
  Tensor host_;
};

class Clip final : public Transform {
 public:
  explicit Clip(double delta) : delta_(delta) { require_nonneg("clip", "delta", delta); }
  std::string config() const override { return fmt::format("clip(delta={})", delta_); }
  void apply(Tensor& u, const StepContext&) override {
    unary(UnaryOp::max_scalar, u, u, -delta_);
    unary(UnaryOp::min_scalar, u, u, delta_);
  }

 private:
  double delta_;
};

class ClipNorm final : public Stateful {
 public:
  explicit ClipNorm(double max_norm) : Stateful("clip_by_global_norm"), max_norm_(max_norm) {
    require_nonneg(name_, "max_norm", max_norm);
    scratch_.resize(1);
  }
  std::string config() const override { return fmt::format("clip_by_global_norm(max_norm={})", max_norm_); }
  void apply(Tensor& u, const StepContext&) override {
    if (!scalar_.defined() || scalar_.device() != u.device()) scalar_ = Tensor::zeros({}, u.options());
    const double norm = std::sqrt(sum_squares(u, scratch_[0], scalar_));
    if (norm > max_norm_) mul_s(u, max_norm_ / norm);
  }

 private:
  double max_norm_;
  Tensor scalar_;
};

class Centralize final : public Transform {
 public:
  explicit Centralize(std::vector<Shape> layout) : layout_(std::move(layout)) {}
  std::string config() const override { return fmt::format("centralize(tensors={})", layout_.size()); }
  void apply(Tensor& u, const StepContext&) override {
    int64_t total = 0;
    for (const Shape& s : layout_) total += shape_numel(s);
    if (total != u.numel())
      throw std::invalid_argument(
          fmt::format("centralize: the layout's {} tensors hold {} values, the buffer {}", layout_.size(), total, u.numel()));
    NoGradGuard no_grad;
    size_t offset = u.offset();
    for (const Shape& s : layout_) {
      const int64_t n = shape_numel(s);
      if (s.size() > 1 && n > 0) {
        Tensor rows = Tensor::view_of(u.storage(), offset, {s[0], n / s[0]});
        Tensor centered = sub(rows, mean(rows, 1, /*keepdim=*/true));
        copy(rows, centered);
      }
      offset += static_cast<size_t>(n);
    }
  }

 private:
  static int64_t shape_numel(const Shape& s) {
    int64_t n = 1;
    for (int64_t d : s) n *= d;
    return n;
  }
  std::vector<Shape> layout_;
};

}  // namespace

TransformPtr chain(std::vector<TransformPtr> transforms) { return std::make_shared<Chain>(std::move(transforms)); }
TransformPtr stateless(std::string config, std::function<void(Tensor&, const StepContext&)> fn) {
  if (!fn) throw std::invalid_argument(fmt::format("stateless '{}': no function", config));
  return std::make_shared<Stateless>(std::move(config), std::move(fn));
}
TransformPtr scale(double factor) {
  require(std::isfinite(factor), "scale", "factor", factor, "a finite value");
  return stateless(fmt::format("scale(factor={})", factor), [factor](Tensor& u, const StepContext&) { mul_s(u, factor); });
}
TransformPtr scale_by_learning_rate(double factor) {
  require(std::isfinite(factor), "scale_by_learning_rate", "factor", factor, "a finite value");
  return stateless(fmt::format("scale_by_learning_rate(factor={})", factor),
                   [factor](Tensor& u, const StepContext& ctx) { mul_s(u, -factor * ctx.lr); });
}
TransformPtr scale_by_schedule(std::function<double(int64_t)> schedule) {
  if (!schedule) throw std::invalid_argument("scale_by_schedule: no schedule");
  return stateless("scale_by_schedule", [schedule](Tensor& u, const StepContext& ctx) {
    const double f = schedule(ctx.step - 1);
    if (!std::isfinite(f))
      throw std::invalid_argument(fmt::format("scale_by_schedule: the schedule gave {} at step {}", f, ctx.step));
    mul_s(u, f);
  });
}
TransformPtr scale_by_adam(double b1, double b2, double eps, double eps_root) {
  return std::make_shared<Adam>(b1, b2, eps, eps_root);
}
TransformPtr scale_by_belief(double b1, double b2, double eps, double eps_root) {
  return std::make_shared<Belief>(b1, b2, eps, eps_root);
}
TransformPtr scale_by_rss(double initial_accumulator_value, double eps) {
  return std::make_shared<Rss>(initial_accumulator_value, eps);
}
TransformPtr scale_by_rms(double decay, double eps, double initial_scale) {
  return std::make_shared<Rms>(decay, eps, initial_scale, false);
}
TransformPtr scale_by_stddev(double decay, double eps, double initial_scale) {
  return std::make_shared<Rms>(decay, eps, initial_scale, true);
}
TransformPtr scale_by_radam(double b1, double b2, double eps, double threshold) {
  return std::make_shared<RAdam>(b1, b2, eps, threshold);
}
TransformPtr scale_by_nadam(double b1, double b2, double eps, double momentum_decay) {
  return std::make_shared<NAdam>(b1, b2, eps, momentum_decay);
}
TransformPtr scale_by_adamax(double b1, double b2, double eps) { return std::make_shared<Adamax>(b1, b2, eps); }
TransformPtr scale_by_yogi(double b1, double b2, double eps, double eps_root, double initial_accumulator_value) {
  return std::make_shared<Yogi>(b1, b2, eps, eps_root, initial_accumulator_value);
}
TransformPtr scale_by_lion(double b1, double b2) { return std::make_shared<Lion>(b1, b2); }
TransformPtr scale_by_trust_ratio(double min_norm, double trust_coefficient, double eps) {
  return std::make_shared<TrustRatio>(min_norm, trust_coefficient, eps);
}
TransformPtr trace(double decay, bool nesterov) { return std::make_shared<Trace>(decay, nesterov); }
TransformPtr add_decayed_weights(double decay) { return std::make_shared<DecayedWeights>(decay); }
TransformPtr add_noise(double eta, double gamma, uint64_t seed) { return std::make_shared<Noise>(eta, gamma, seed); }
TransformPtr clip(double delta) { return std::make_shared<Clip>(delta); }
TransformPtr clip_by_global_norm(double max_norm) { return std::make_shared<ClipNorm>(max_norm); }
TransformPtr centralize(std::vector<Shape> layout) { return std::make_shared<Centralize>(std::move(layout)); }

}  // namespace axon
