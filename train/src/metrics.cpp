#include "axon/metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <stdexcept>

#include "axon/ops.h"

namespace axon {

int64_t count_correct(const Tensor& scores, std::span<const int32_t> labels) {
  if (scores.dim() != 2 || scores.size(0) != static_cast<int64_t>(labels.size()))
    throw std::invalid_argument(fmt::format("accuracy: scores of shape {} for {} labels", shape_str(scores.shape()),
                                            labels.size()));
  std::vector<int64_t> predicted = argmax_rows(scores);  // copies the argmax (not the scores) to the host
  int64_t correct = 0;
  for (size_t i = 0; i < labels.size(); ++i) correct += predicted[i] == labels[i];
  return correct;
}

double accuracy(const Tensor& scores, std::span<const int32_t> labels) {
  if (labels.empty()) throw std::invalid_argument("accuracy: empty batch");
  return static_cast<double>(count_correct(scores, labels)) / static_cast<double>(labels.size());
}

}  // namespace axon

// ---- streaming metrics ----

namespace axon {

void Metric::add_counts(const std::vector<double>& counts) {
  if (counts.size() != counts_.size())
    throw std::invalid_argument(fmt::format("{}: {} counts to add, expected {}", name(), counts.size(), counts_.size()));
  for (size_t i = 0; i < counts.size(); ++i) counts_[i] += counts[i];
}

void Metric::merge(const Metric& other) {
  if (other.config() != config())
    throw std::invalid_argument(fmt::format("{}: cannot merge {}", config(), other.config()));
  add_counts(other.counts_);
}

namespace {

std::vector<double> host_values(const Tensor& t) {
  const Tensor c = t.to(Device::cpu()).to(DType::f64);
  const double* p = static_cast<const double*>(c.raw_data());
  return std::vector<double>(p, p + c.numel());
}

std::vector<int64_t> host_labels(const Tensor& t) {
  const Tensor c = t.to(Device::cpu()).to(DType::i64);
  const int64_t* p = static_cast<const int64_t*>(c.raw_data());
  return std::vector<int64_t>(p, p + c.numel());
}

bool is_label_dtype(DType d) { return d == DType::i32 || d == DType::i64; }

void check_floating(const std::string& metric, const Tensor& p) {
  if (!p.defined() || !is_floating(p.dtype()) || p.dim() < 1)
    throw std::invalid_argument(fmt::format("{}: prediction must be a floating tensor {{batch, ...}}, got {} {}", metric,
                                            p.defined() ? dtype_name(p.dtype()) : "undefined",
                                            p.defined() ? shape_str(p.shape()) : ""));
}

void check_same(const std::string& metric, const Tensor& p, const Tensor& y) {
  check_floating(metric, p);
  if (!y.defined() || y.shape() != p.shape() || !is_floating(y.dtype()))
    throw std::invalid_argument(fmt::format("{}: target {} {} for prediction {} (expected a floating target of the same shape)",
                                            metric, y.defined() ? dtype_name(y.dtype()) : "undefined",
                                            y.defined() ? shape_str(y.shape()) : "", shape_str(p.shape())));
}

// Per row of prediction {batch, classes}: the true class (labels {batch}, or a one-hot target).
std::vector<int64_t> true_classes(const std::string& metric, const Tensor& p, const Tensor& y) {
  if (p.dim() != 2)
    throw std::invalid_argument(fmt::format("{}: prediction must be {{batch, classes}}, got {}", metric, shape_str(p.shape())));
  const int64_t batch = p.size(0), classes = p.size(1);
  std::vector<int64_t> out;
  if (is_label_dtype(y.dtype())) {
    if (y.dim() != 1 || y.size(0) != batch)
      throw std::invalid_argument(fmt::format("{}: labels {} for prediction {}", metric, shape_str(y.shape()), shape_str(p.shape())));
    out = host_labels(y);
    for (size_t r = 0; r < out.size(); ++r)
      if (out[r] < 0 || out[r] >= classes)
        throw std::invalid_argument(fmt::format("{}: label {} at row {} is out of range for {} classes", metric, out[r], r, classes));
    return out;
  }
  check_same(metric, p, y);
  const std::vector<double> v = host_values(y);
  for (int64_t r = 0; r < batch; ++r) {
    const auto row = v.begin() + r * classes;
    out.push_back(std::max_element(row, row + classes) - row);
  }
  return out;
}

class Counting final : public Metric {
 public:
  using Update = std::function<void(const std::string&, const Tensor&, const Tensor&, std::vector<double>&)>;
  using Compute = std::function<std::optional<double>(const std::vector<double>&)>;
  Counting(std::string name, std::string config, size_t n, Update u, Compute c)
      : Metric(n), name_(std::move(name)), config_(std::move(config)), update_(std::move(u)), compute_(std::move(c)) {}
  std::string name() const override { return name_; }
  void update(const Tensor& p, const Tensor& y) override { update_(name_, p, y, counts_); }
  std::optional<double> compute() const override { return compute_(counts_); }

 protected:
  std::string config() const override { return config_; }

 private:
  std::string name_, config_;
  Update update_;
  Compute compute_;
};

double ratio(double num, double den) { return den > 0 ? num / den : 0.0; }

// counts: tp, fp, tn, fn.
Counting::Update confusion(double threshold) {
  return [threshold](const std::string& metric, const Tensor& p, const Tensor& y, std::vector<double>& c) {
    check_same(metric, p, y);
    const std::vector<double> pv = host_values(p), yv = host_values(y);
    for (size_t i = 0; i < pv.size(); ++i) {
      const bool predicted = pv[i] > threshold, actual = yv[i] == 1.0;
      c[predicted ? (actual ? 0 : 1) : (actual ? 3 : 2)] += 1.0;
    }
  };
}

std::unique_ptr<Metric> binary(const char* name, double threshold, Counting::Compute compute) {
  if (!std::isfinite(threshold))
    throw std::invalid_argument(fmt::format("{}: option threshold = {} must be finite", name, threshold));
  return std::make_unique<Counting>(name, fmt::format("{}(threshold={})", name, threshold), 4, confusion(threshold),
                                    [compute](const std::vector<double>& c) -> std::optional<double> {
                                      if (c[0] + c[1] + c[2] + c[3] == 0) return std::nullopt;
                                      return compute(c);
                                    });
}

}  // namespace

std::unique_ptr<Metric> accuracy_metric(double threshold) {
  if (!std::isfinite(threshold))
    throw std::invalid_argument(fmt::format("accuracy: option threshold = {} must be finite", threshold));
  return std::make_unique<Counting>(
      "accuracy", fmt::format("accuracy(threshold={})", threshold), 2,
      [threshold](const std::string& metric, const Tensor& p, const Tensor& y, std::vector<double>& c) {
        check_floating(metric, p);
        const bool one_per_sample = p.dim() == 1 || (p.dim() == 2 && p.size(1) == 1);
        if (one_per_sample && y.defined() && is_floating(y.dtype())) {  // binary
          check_same(metric, p, y);
          const std::vector<double> pv = host_values(p), yv = host_values(y);
          for (size_t i = 0; i < pv.size(); ++i) c[0] += (pv[i] > threshold) == (yv[i] == 1.0);
          c[1] += static_cast<double>(pv.size());
          return;
        }
        const std::vector<int64_t> truth = true_classes(metric, p, y);
        const std::vector<int64_t> predicted = argmax_rows(p.to(DType::f32));
        for (size_t r = 0; r < truth.size(); ++r) c[0] += predicted[r] == truth[r];
        c[1] += static_cast<double>(truth.size());
      },
      [](const std::vector<double>& c) { return c[1] > 0 ? std::optional<double>(c[0] / c[1]) : std::nullopt; });
}

std::unique_ptr<Metric> top_k_categorical_accuracy(int64_t k) {
  if (k < 1) throw std::invalid_argument(fmt::format("top_k_categorical_accuracy: option k = {} must be >= 1", k));
  return std::make_unique<Counting>(
      "top_k_categorical_accuracy", fmt::format("top_k_categorical_accuracy(k={})", k), 2,
      [k](const std::string& metric, const Tensor& p, const Tensor& y, std::vector<double>& c) {
        check_floating(metric, p);
        const std::vector<int64_t> truth = true_classes(metric, p, y);
        const std::vector<double> v = host_values(p);
        const int64_t classes = p.size(1);
        for (size_t r = 0; r < truth.size(); ++r) {
          // In the top k when fewer than k classes score strictly higher (ties count in favour).
          const double mine = v[r * classes + truth[r]];
          int64_t higher = 0;
          for (int64_t j = 0; j < classes; ++j) higher += v[r * classes + j] > mine;
          c[0] += higher < k;
        }
        c[1] += static_cast<double>(truth.size());
      },
      [](const std::vector<double>& c) { return c[1] > 0 ? std::optional<double>(c[0] / c[1]) : std::nullopt; });
}

std::unique_ptr<Metric> true_positives(double t) {
  return binary("true_positives", t, [](const std::vector<double>& c) { return c[0]; });
}
std::unique_ptr<Metric> false_positives(double t) {
  return binary("false_positives", t, [](const std::vector<double>& c) { return c[1]; });
}
std::unique_ptr<Metric> true_negatives(double t) {
  return binary("true_negatives", t, [](const std::vector<double>& c) { return c[2]; });
}
std::unique_ptr<Metric> false_negatives(double t) {
  return binary("false_negatives", t, [](const std::vector<double>& c) { return c[3]; });
}
std::unique_ptr<Metric> precision(double t) {
  return binary("precision", t, [](const std::vector<double>& c) { return ratio(c[0], c[0] + c[1]); });
}
std::unique_ptr<Metric> recall(double t) {
  return binary("recall", t, [](const std::vector<double>& c) { return ratio(c[0], c[0] + c[3]); });
}
std::unique_ptr<Metric> sensitivity(double t) {
  return binary("sensitivity", t, [](const std::vector<double>& c) { return ratio(c[0], c[0] + c[3]); });
}
std::unique_ptr<Metric> specificity(double t) {
  return binary("specificity", t, [](const std::vector<double>& c) { return ratio(c[2], c[2] + c[1]); });
}
std::unique_ptr<Metric> f1_score(double t) {
  return binary("f1_score", t, [](const std::vector<double>& c) { return ratio(2 * c[0], 2 * c[0] + c[1] + c[3]); });
}

namespace {

std::unique_ptr<Metric> error_metric(const char* name, bool squared) {
  return std::make_unique<Counting>(
      name, name, 2,
      [squared](const std::string& metric, const Tensor& p, const Tensor& y, std::vector<double>& c) {
        check_same(metric, p, y);
        const std::vector<double> pv = host_values(p), yv = host_values(y);
        for (size_t i = 0; i < pv.size(); ++i) {
          const double d = pv[i] - yv[i];
          c[0] += squared ? d * d : std::fabs(d);
        }
        c[1] += static_cast<double>(pv.size());
      },
      [](const std::vector<double>& c) { return c[1] > 0 ? std::optional<double>(c[0] / c[1]) : std::nullopt; });
}

}  // namespace

std::unique_ptr<Metric> mean_absolute_error_metric() { return error_metric("mean_absolute_error", false); }
std::unique_ptr<Metric> mean_squared_error_metric() { return error_metric("mean_squared_error", true); }

}  // namespace axon
