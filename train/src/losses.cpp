#include "axon/losses.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "axon/autograd.h"
#include "axon/backend.h"
#include "axon/ops.h"

namespace axon {

Tensor softmax_cross_entropy(const Tensor& logits, std::span<const int32_t> labels) {
  if (logits.dim() != 2)
    throw std::invalid_argument("softmax_cross_entropy: logits must be {batch, classes}, got " + shape_str(logits.shape()));
  const int64_t classes = logits.size(1);
  for (size_t r = 0; r < labels.size(); ++r)
    if (labels[r] < 0 || labels[r] >= classes)
      throw std::invalid_argument(fmt::format("softmax_cross_entropy: label {} at row {} is out of range for {} classes",
                                              labels[r], r, classes));
  Tensor host = Tensor::from_vector({static_cast<int64_t>(labels.size())}, std::vector<int32_t>(labels.begin(), labels.end()),
                                    {DType::i32, Device::cpu()});
  return softmax_cross_entropy(logits, host.to(logits.device()));
}

Tensor softmax_cross_entropy(const Tensor& logits, const Tensor& labels) {
  if (logits.dim() != 2)
    throw std::invalid_argument("softmax_cross_entropy: logits must be {batch, classes}, got " + shape_str(logits.shape()));
  if (!is_floating(logits.dtype()))
    throw std::invalid_argument(fmt::format("softmax_cross_entropy: logits of dtype {} (expected f32, f64 or bf16)",
                                            dtype_name(logits.dtype())));
  const int64_t batch = logits.size(0);
  if (labels.dim() != 1 || labels.size(0) != batch)
    throw std::invalid_argument(fmt::format("softmax_cross_entropy: labels of shape {} for logits of shape {}",
                                            shape_str(labels.shape()), shape_str(logits.shape())));
  if (labels.dtype() != DType::i32 || labels.device() != logits.device())
    throw std::invalid_argument(fmt::format("softmax_cross_entropy: labels must be i32 on {} (the logits' device), got {} on {}",
                                            logits.device().str(), dtype_name(labels.dtype()), labels.device().str()));
  if (batch == 0) throw std::invalid_argument("softmax_cross_entropy: empty batch");

  // Keep the probabilities for backward: they are the gradient up to the one-hot and the scale.
  Tensor probs = Tensor::empty(logits.shape(), logits.options());
  // f32 (f64 for f64 logits, which gradient checks use) whatever the logits' dtype: a bf16 loss
  // would lose the digits that show training progress.
  Tensor loss = Tensor::empty({}, {logits.dtype() == DType::f64 ? DType::f64 : DType::f32, logits.device()});
  backend(logits.device()).cross_entropy(logits, labels, probs, loss);
  return record("softmax_cross_entropy", loss, {logits}, [probs, labels](const Tensor& g, GradSlots& grads) {
    float beta = 0.0f;
    Tensor gx = grads.target(0, probs.shape(), probs.options(), beta);
    // g is the loss's own dtype: f64 for f64 logits (gradient checks keep their precision), else f32.
    backend(probs.device()).cross_entropy_backward(probs, labels, g, beta, gx);
  });
}

Tensor mean_squared_error(const Tensor& prediction, const Tensor& target) {
  if (prediction.shape() != target.shape())
    throw std::invalid_argument(fmt::format("mean_squared_error: prediction {} and target {} differ in shape",
                                            shape_str(prediction.shape()), shape_str(target.shape())));
  return mean(square(sub(prediction, target)));
}

// ---- the loss library ----

namespace {

constexpr double kProbEps = 1e-7;

void check_pair(const char* loss, const Tensor& p, const Tensor& y) {
  if (!p.defined() || !y.defined()) throw std::invalid_argument(fmt::format("{}: undefined prediction or target", loss));
  if (p.shape() != y.shape())
    throw std::invalid_argument(fmt::format("{}: prediction {} and target {} differ in shape", loss, shape_str(p.shape()),
                                            shape_str(y.shape())));
  if (p.dim() < 1)
    throw std::invalid_argument(fmt::format("{}: prediction must have a batch axis, got shape {}", loss, shape_str(p.shape())));
  if (!is_floating(p.dtype()) || p.dtype() != y.dtype())
    throw std::invalid_argument(fmt::format("{}: prediction ({}) and target ({}) must share one floating dtype", loss,
                                            dtype_name(p.dtype()), dtype_name(y.dtype())));
  if (p.device() != y.device())
    throw std::invalid_argument(
        fmt::format("{}: prediction on {} but target on {}", loss, p.device().str(), y.device().str()));
}

// x·v and x + v with v a scalar tensor of x's dtype: mul_scalar/add_scalar take a float, which f64
// losses (gradient checks) would notice.
Tensor times(const Tensor& x, double v) { return x * Tensor::scalar(v, x.options()); }
Tensor plus(const Tensor& x, double v) { return x + Tensor::scalar(v, x.options()); }
Tensor absolute(const Tensor& x) { return relu(x) + relu(neg(x)); }
// lo + relu(x - lo) - relu(x - hi): x inside [lo, hi] (gradient 1 inside, 0 outside).
Tensor clip(const Tensor& x, double lo, double hi) {
  return plus(relu(plus(x, -lo)) - relu(plus(x, -hi)), lo);
}
// log(1 + exp(x)) = relu(x) + log(1 + exp(-|x|)): finite for any x.
// Its own autograd node: the gradient sigmoid(x) (the composition's relu and |x| would give 0 at x = 0).
Tensor softplus(const Tensor& x) {
  Tensor value;
  {
    NoGradGuard no_grad;
    value = relu(x) + log(plus(exp(neg(absolute(x))), 1.0));
  }
  return record("softplus", value, {x}, [x](const Tensor& g, GradSlots& grads) {
    if (!grads.needs(0)) return;
    NoGradGuard no_grad;
    grads.add(0, g * sigmoid(x.detach()));
  });
}
Tensor log_prob(const Tensor& p) {
  return log(clip(p, (kProbEps), (1.0 - kProbEps)));
}

// sum / count, dividing by a tensor: mean() scales by a float 1/count, which f64 losses would notice.
Tensor mean_exact(const Tensor& total, int64_t count) {
  return total / Tensor::scalar(static_cast<double>(count), total.options());
}

// Each sample's values {batch, ...} -> {batch}: the mean (or sum) over the non-batch axes.
Tensor per_sample(const Tensor& x, bool sum_axes = false) {
  const int64_t batch = x.size(0);
  if (x.dim() == 1) return x;
  const Tensor rows = x.reshape({batch, -1});
  return sum_axes ? sum(rows, 1) : mean_exact(sum(rows, 1), rows.size(1));
}

Tensor reduce(const char* loss, const Tensor& samples, Reduction reduction) {
  switch (reduction) {
    case Reduction::none: return samples;
    case Reduction::sum: return sum(samples);
    case Reduction::mean: return mean_exact(sum(samples), samples.size(0));
  }
  throw std::invalid_argument(fmt::format("{}: unknown reduction", loss));
}

// An empty batch: {0} for none, 0 for sum; a mean over no samples is an error.
bool empty_batch(const char* loss, const Tensor& p, Reduction reduction, Tensor& out) {
  if (p.size(0) != 0) return false;
  if (reduction == Reduction::mean)
    throw std::invalid_argument(fmt::format("{}: empty batch (shape {}): the mean over no samples is undefined", loss,
                                            shape_str(p.shape())));
  out = reduction == Reduction::none ? Tensor::zeros({0}, p.options()) : Tensor::zeros({}, p.options());
  return true;
}

void check_option(const char* loss, const char* option, double value, bool ok, const char* rule) {
  if (!ok) throw std::invalid_argument(fmt::format("{}: option {} = {} is out of range (need {})", loss, option, value, rule));
}

}  // namespace

Tensor binary_cross_entropy(const Tensor& p, const Tensor& y, BinaryCrossEntropyOptions o) {
  const char* name = "binary_cross_entropy";
  check_pair(name, p, y);
  check_option(name, "positive_weight", o.positive_weight, o.positive_weight >= 0 && std::isfinite(o.positive_weight), ">= 0");
  check_option(name, "negative_weight", o.negative_weight, o.negative_weight >= 0 && std::isfinite(o.negative_weight), ">= 0");
  Tensor out;
  if (empty_batch(name, p, o.reduction, out)) return out;
  Tensor pos, neg_term;  // -log p and -log(1 - p)
  if (o.from_logits) {
    pos = softplus(neg(p));
    neg_term = softplus(p);
  } else {
    pos = neg(log_prob(p));
    neg_term = neg(log_prob(plus(neg(p), 1.0f)));
  }
  const Tensor one_minus_y = plus(neg(y), 1.0f);
  const Tensor l = times(y * pos, (o.positive_weight)) +
                   times(one_minus_y * neg_term, (o.negative_weight));
  return reduce(name, per_sample(l), o.reduction);
}

Tensor apply_label_smoothing(const Tensor& y, double smoothing) {
  check_option("label_smoothing", "smoothing", smoothing, smoothing >= 0 && smoothing <= 1, "0 <= smoothing <= 1");
  if (y.dim() < 1) throw std::invalid_argument("label_smoothing: target must have a class axis");
  const double classes = static_cast<double>(y.size(y.dim() - 1));
  return plus(times(y, (1.0 - smoothing)), (smoothing / classes));
}

Tensor categorical_cross_entropy(const Tensor& p, const Tensor& y, CategoricalCrossEntropyOptions o) {
  const char* name = "categorical_cross_entropy";
  check_pair(name, p, y);
  if (p.dim() != 2)
    throw std::invalid_argument(fmt::format("{}: prediction must be {{batch, classes}}, got {}", name, shape_str(p.shape())));
  const int64_t classes = p.size(1);
  if (!o.class_weights.empty() && static_cast<int64_t>(o.class_weights.size()) != classes)
    throw std::invalid_argument(
        fmt::format("{}: {} class weights for {} classes", name, o.class_weights.size(), classes));
  for (double w : o.class_weights) check_option(name, "class_weights", w, w >= 0 && std::isfinite(w), "each >= 0");
  check_option(name, "label_smoothing", o.label_smoothing, o.label_smoothing >= 0 && o.label_smoothing <= 1, "0 <= s <= 1");
  Tensor out;
  if (empty_batch(name, p, o.reduction, out)) return out;
  const Tensor logp = o.from_logits ? log_softmax(p, -1) : log_prob(p);
  Tensor target = o.label_smoothing > 0 ? apply_label_smoothing(y, o.label_smoothing) : y;
  Tensor weights_per_sample;
  if (!o.class_weights.empty()) {
    std::vector<float> w(o.class_weights.begin(), o.class_weights.end());
    const Tensor row = Tensor::from_vector({1, classes}, w).to(p.dtype()).to(p.device());
    weights_per_sample = sum(y * row, 1);  // Σ_c w_c·y_c: the sample's weight
    target = target * row;
  }
  const Tensor samples = neg(sum(target * logp, 1));
  if (o.reduction == Reduction::mean && weights_per_sample.defined()) return sum(samples) / sum(weights_per_sample);
  return reduce(name, samples, o.reduction);
}

Tensor categorical_cross_entropy(const Tensor& p, std::span<const int32_t> labels, CategoricalCrossEntropyOptions o) {
  if (p.dim() != 2 || p.size(0) != static_cast<int64_t>(labels.size()))
    throw std::invalid_argument(fmt::format("categorical_cross_entropy: prediction {} for {} labels (expected {{batch, classes}})",
                                            shape_str(p.shape()), labels.size()));
  const int64_t classes = p.size(1);
  std::vector<float> onehot(labels.size() * static_cast<size_t>(classes), 0.0f);
  for (size_t r = 0; r < labels.size(); ++r) {
    if (labels[r] < 0 || labels[r] >= classes)
      throw std::invalid_argument(fmt::format("categorical_cross_entropy: label {} at row {} is out of range for {} classes",
                                              labels[r], r, classes));
    onehot[r * static_cast<size_t>(classes) + static_cast<size_t>(labels[r])] = 1.0f;
  }
  const Tensor y = Tensor::from_vector({p.size(0), classes}, onehot).to(p.dtype()).to(p.device());
  return categorical_cross_entropy(p, y, o);
}

Tensor mean_squared_error(const Tensor& p, const Tensor& y, Reduction reduction) {
  check_pair("mean_squared_error", p, y);
  Tensor out;
  if (empty_batch("mean_squared_error", p, reduction, out)) return out;
  return reduce("mean_squared_error", per_sample(square(p - y)), reduction);
}

Tensor mean_absolute_error(const Tensor& p, const Tensor& y, Reduction reduction) {
  check_pair("mean_absolute_error", p, y);
  Tensor out;
  if (empty_batch("mean_absolute_error", p, reduction, out)) return out;
  return reduce("mean_absolute_error", per_sample(absolute(p - y)), reduction);
}

Tensor huber(const Tensor& p, const Tensor& y, double delta, Reduction reduction) {
  check_pair("huber", p, y);
  check_option("huber", "delta", delta, delta > 0 && std::isfinite(delta), "> 0");
  Tensor out;
  if (empty_batch("huber", p, reduction, out)) return out;
  const Tensor a = absolute(p - y);
  const Tensor quadratic = a - relu(plus(a, (-delta)));  // min(|d|, delta)
  const Tensor linear = a - quadratic;
  return reduce("huber", per_sample(times(square(quadratic), 0.5f) + times(linear, (delta))),
                reduction);
}

Tensor log_cosh(const Tensor& p, const Tensor& y, Reduction reduction) {
  check_pair("log_cosh", p, y);
  Tensor out;
  if (empty_batch("log_cosh", p, reduction, out)) return out;
  const Tensor a = absolute(p - y);
  const Tensor l = plus(a + log(plus(exp(times(a, -2.0f)), 1.0f)), (-std::log(2.0)));
  return reduce("log_cosh", per_sample(l), reduction);
}

Tensor kl_divergence(const Tensor& p, const Tensor& y, Reduction reduction) {
  check_pair("kl_divergence", p, y);
  Tensor out;
  if (empty_batch("kl_divergence", p, reduction, out)) return out;
  return reduce("kl_divergence", per_sample(y * (log_prob(y) - log_prob(p)), /*sum_axes=*/true), reduction);
}

Tensor hinge(const Tensor& p, const Tensor& y, Reduction reduction) {
  check_pair("hinge", p, y);
  Tensor out;
  if (empty_batch("hinge", p, reduction, out)) return out;
  return reduce("hinge", per_sample(relu(plus(neg(y * p), 1.0f))), reduction);
}

Tensor categorical_hinge(const Tensor& p, const Tensor& y, Reduction reduction) {
  const char* name = "categorical_hinge";
  check_pair(name, p, y);
  if (p.dim() != 2)
    throw std::invalid_argument(fmt::format("{}: prediction must be {{batch, classes}}, got {}", name, shape_str(p.shape())));
  Tensor out;
  if (empty_batch(name, p, reduction, out)) return out;
  const Tensor negatives = plus(neg(y), 1.0f) * p;  // (1 - y)·p
  // max over the classes, as a product with the one-hot of each row's argmax (differentiable).
  const std::vector<int64_t> at = argmax_rows(negatives.detach().to(DType::f32));
  const int64_t classes = p.size(1);
  std::vector<float> mask(static_cast<size_t>(p.numel()), 0.0f);
  for (size_t r = 0; r < at.size(); ++r) mask[r * static_cast<size_t>(classes) + static_cast<size_t>(at[r])] = 1.0f;
  const Tensor m = Tensor::from_vector(p.shape(), mask).to(p.dtype()).to(p.device());
  const Tensor worst_negative = sum(negatives * m, 1), positive = sum(y * p, 1);
  return reduce(name, relu(plus(worst_negative - positive, 1.0f)), reduction);
}

Tensor soft_margin(const Tensor& p, const Tensor& y, Reduction reduction) {
  check_pair("soft_margin", p, y);
  Tensor out;
  if (empty_batch("soft_margin", p, reduction, out)) return out;
  return reduce("soft_margin", per_sample(softplus(neg(y * p))), reduction);
}

Tensor poisson(const Tensor& p, const Tensor& y, Reduction reduction) {
  check_pair("poisson", p, y);
  Tensor out;
  if (empty_batch("poisson", p, reduction, out)) return out;
  return reduce("poisson", per_sample(p - y * log(plus(p, (kProbEps)))), reduction);
}

Tensor cosine_similarity(const Tensor& p, const Tensor& y, double eps, Reduction reduction) {
  check_pair("cosine_similarity", p, y);
  check_option("cosine_similarity", "eps", eps, eps > 0 && std::isfinite(eps), "> 0");
  Tensor out;
  if (empty_batch("cosine_similarity", p, reduction, out)) return out;
  const int64_t batch = p.size(0);
  const Tensor a = p.reshape({batch, -1}), b = y.reshape({batch, -1});
  const double eps2 = eps * eps;
  // max(|x|, eps) = sqrt(max(Σx², eps²)) = exp(0.5·log(eps² + relu(Σx² - eps²))).
  auto norm = [eps2](const Tensor& x) {
    return exp(times(log(plus(relu(plus(sum(square(x), 1), -eps2)), eps2)), 0.5f));
  };
  return reduce("cosine_similarity", neg(sum(a * b, 1) / (norm(a) * norm(b))), reduction);
}

Tensor margin_ranking(const Tensor& p1, const Tensor& p2, const Tensor& y, double margin, Reduction reduction) {
  check_pair("margin_ranking", p1, y);
  check_pair("margin_ranking", p2, y);
  check_option("margin_ranking", "margin", margin, std::isfinite(margin), "a finite value");
  Tensor out;
  if (empty_batch("margin_ranking", p1, reduction, out)) return out;
  return reduce("margin_ranking", per_sample(relu(plus(neg(y * (p1 - p2)), (margin)))), reduction);
}

Tensor connectionist_temporal_classification(const Tensor& log_probs, const std::vector<std::vector<int32_t>>& targets,
                                             std::span<const int64_t> input_lengths, int64_t blank, Reduction reduction) {
  const char* name = "connectionist_temporal_classification";
  if (!log_probs.defined() || log_probs.dim() != 3 || !is_floating(log_probs.dtype()))
    throw std::invalid_argument(fmt::format("{}: log_probs must be a floating {{batch, time, classes}} tensor, got {} {}", name,
                                            log_probs.defined() ? dtype_name(log_probs.dtype()) : "undefined",
                                            log_probs.defined() ? shape_str(log_probs.shape()) : ""));
  const int64_t batch = log_probs.size(0), frames = log_probs.size(1), classes = log_probs.size(2);
  if (static_cast<int64_t>(targets.size()) != batch)
    throw std::invalid_argument(fmt::format("{}: {} target sequences for a batch of {}", name, targets.size(), batch));
  if (!input_lengths.empty() && static_cast<int64_t>(input_lengths.size()) != batch)
    throw std::invalid_argument(fmt::format("{}: {} input lengths for a batch of {}", name, input_lengths.size(), batch));
  if (blank < 0 || blank >= classes)
    throw std::invalid_argument(fmt::format("{}: option blank = {} is out of range for {} classes", name, blank, classes));
  for (int64_t b = 0; b < batch; ++b) {
    if (!input_lengths.empty() && (input_lengths[b] < 0 || input_lengths[b] > frames))
      throw std::invalid_argument(fmt::format("{}: input length {} of sample {} is outside [0, {}]", name, input_lengths[b], b, frames));
    for (int32_t l : targets[b])
      if (l < 0 || l >= classes || l == blank)
        throw std::invalid_argument(fmt::format("{}: label {} in the target of sample {} is out of range for {} classes or is the blank {}",
                                                name, l, b, classes, blank));
  }
  Tensor out;
  if (empty_batch(name, log_probs, reduction, out)) return out;

  const Tensor host = log_probs.detach().to(Device::cpu()).to(DType::f64);
  const double* y = static_cast<const double*>(host.raw_data());
  const double ninf = -std::numeric_limits<double>::infinity();
  auto lse = [ninf](double a, double b) {
    if (a == ninf) return b;
    if (b == ninf) return a;
    const double m = std::max(a, b);
    return m + std::log(std::exp(a - m) + std::exp(b - m));
  };
  std::vector<double> losses(static_cast<size_t>(batch)), grad(static_cast<size_t>(host.numel()), 0.0);
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t T = input_lengths.empty() ? frames : input_lengths[b];
    const std::vector<int32_t>& l = targets[b];
    const int64_t S = 2 * static_cast<int64_t>(l.size()) + 1;
    auto label = [&](int64_t s) { return s % 2 == 0 ? blank : static_cast<int64_t>(l[static_cast<size_t>(s / 2)]); };
    auto at = [&](int64_t t, int64_t c) { return y[(b * frames + t) * classes + c]; };
    if (T == 0) {
      losses[b] = l.empty() ? 0.0 : std::numeric_limits<double>::infinity();
      continue;
    }
    std::vector<double> alpha(static_cast<size_t>(T * S), ninf), beta(static_cast<size_t>(T * S), ninf);
    auto A = [&](int64_t t, int64_t s) -> double& { return alpha[static_cast<size_t>(t * S + s)]; };
    auto B = [&](int64_t t, int64_t s) -> double& { return beta[static_cast<size_t>(t * S + s)]; };
    A(0, 0) = at(0, blank);
    if (S > 1) A(0, 1) = at(0, label(1));
    for (int64_t t = 1; t < T; ++t)
      for (int64_t s = 0; s < S; ++s) {
        double a = A(t - 1, s);
        if (s >= 1) a = lse(a, A(t - 1, s - 1));
        if (s >= 2 && label(s) != blank && label(s) != label(s - 2)) a = lse(a, A(t - 1, s - 2));
        A(t, s) = a == ninf ? ninf : a + at(t, label(s));
      }
    B(T - 1, S - 1) = at(T - 1, label(S - 1));
    if (S > 1) B(T - 1, S - 2) = at(T - 1, label(S - 2));
    for (int64_t t = T - 2; t >= 0; --t)
      for (int64_t s = 0; s < S; ++s) {
        double v = B(t + 1, s);
        if (s + 1 < S) v = lse(v, B(t + 1, s + 1));
        if (s + 2 < S && label(s) != blank && label(s) != label(s + 2)) v = lse(v, B(t + 1, s + 2));
        B(t, s) = v == ninf ? ninf : v + at(t, label(s));
      }
    const double log_p = S > 1 ? lse(A(T - 1, S - 1), A(T - 1, S - 2)) : A(T - 1, S - 1);
    if (log_p == ninf) {
      losses[b] = std::numeric_limits<double>::infinity();
      continue;
    }
    losses[b] = -log_p;
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> occupancy(static_cast<size_t>(classes), ninf);
      for (int64_t s = 0; s < S; ++s) {
        double& o = occupancy[static_cast<size_t>(label(s))];
        o = lse(o, A(t, s) + B(t, s));
      }
      for (int64_t c = 0; c < classes; ++c) {
        const double o = occupancy[static_cast<size_t>(c)];
        if (o != ninf) grad[static_cast<size_t>((b * frames + t) * classes + c)] = -std::exp(o - at(t, c) - log_p);
      }
    }
  }
  const Tensor samples_value =
      Tensor::from_vector({batch}, losses, {DType::f64, Device::cpu()}).to(log_probs.dtype()).to(log_probs.device());
  const Shape shape = log_probs.shape();
  const Tensor samples = record(name, samples_value, {log_probs}, [grad, shape, batch](const Tensor& g, GradSlots& grads) {
    if (!grads.needs(0)) return;
    NoGradGuard no_grad;
    const Tensor gh = g.detach().to(Device::cpu()).to(DType::f64);
    const double* gv = static_cast<const double*>(gh.raw_data());
    std::vector<double> scaled(grad.size());
    const size_t per = grad.size() / static_cast<size_t>(batch);
    for (size_t i = 0; i < grad.size(); ++i) scaled[i] = grad[i] * gv[i / per];
    grads.add(0, Tensor::from_vector(shape, scaled, {DType::f64, Device::cpu()}).to(g.dtype()).to(g.device()));
  });
  if (reduction != Reduction::mean) return reduce(name, samples, reduction);
  std::vector<double> inverse_lengths;
  for (const auto& l : targets) inverse_lengths.push_back(1.0 / static_cast<double>(std::max<size_t>(l.size(), 1)));
  const Tensor scale = Tensor::from_vector({batch}, inverse_lengths, {DType::f64, Device::cpu()})
                           .to(log_probs.dtype())
                           .to(log_probs.device());
  return mean_exact(sum(samples * scale), batch);
}

}  // namespace axon
