// Metrics: plain numbers computed without autograd.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "axon/tensor.h"

namespace axon {

// How many rows of scores {batch, classes} have their largest value at the label.
int64_t count_correct(const Tensor& scores, std::span<const int32_t> labels);
// count_correct / batch.
double accuracy(const Tensor& scores, std::span<const int32_t> labels);

}  // namespace axon

// ---- streaming metrics (Axon.Metrics) ----
//
// A metric accumulates counts batch by batch: update() adds a batch, compute() gives the value over
// everything seen, reset() forgets it, and merge() / counts() + add_counts() combine metrics of
// several ranks (sum the counts with an all-reduce, then compute). update() reads its arguments on
// the host (one copy per batch from a GPU).
//
// Arguments: prediction {batch, ...} floating (thresholds apply to the values given: pass
// probabilities, or set the threshold to 0 for logits), target of the same shape (0/1 or one-hot),
// or for the categorical metrics i32 or i64 class labels {batch} (the "sparse" form, chosen by the
// target's dtype). An empty batch adds
// nothing. Errors (std::invalid_argument) name the metric and the shapes or dtypes.
namespace axon {

class Metric {
 public:
  virtual ~Metric() = default;
  virtual std::string name() const = 0;
  virtual void update(const Tensor& prediction, const Tensor& target) = 0;
  // The value over every update since the last reset; nullopt before any sample was counted.
  // A ratio whose denominator is 0 (say precision with no positive prediction) is 0.
  virtual std::optional<double> compute() const = 0;
  void reset() { std::fill(counts_.begin(), counts_.end(), 0.0); }
  // The accumulated counts (all additive), to all-reduce across ranks; add_counts adds another's.
  const std::vector<double>& counts() const { return counts_; }
  void add_counts(const std::vector<double>& counts);
  // Adds another metric's counts; throws unless it is the same metric with the same options.
  void merge(const Metric& other);

 protected:
  explicit Metric(size_t n) : counts_(n, 0.0) {}
  virtual std::string config() const { return name(); }
  std::vector<double> counts_;
};

// Correct predictions / samples. Binary (threshold on each value) when the target is floating and
// the prediction has one value per sample ({batch} or {batch, 1}); categorical (argmax) otherwise.
std::unique_ptr<Metric> accuracy_metric(double threshold = 0.5);
// The label (or one-hot class) among the k highest scores / samples (Axon: k 5).
std::unique_ptr<Metric> top_k_categorical_accuracy(int64_t k = 5);
// Binary counts over every element: a prediction above `threshold` is positive (as Axon and
// Keras), a target is positive when it is 1.
std::unique_ptr<Metric> true_positives(double threshold = 0.5);
std::unique_ptr<Metric> false_positives(double threshold = 0.5);
std::unique_ptr<Metric> true_negatives(double threshold = 0.5);
std::unique_ptr<Metric> false_negatives(double threshold = 0.5);
// tp / (tp + fp).
std::unique_ptr<Metric> precision(double threshold = 0.5);
// tp / (tp + fn); sensitivity is the same.
std::unique_ptr<Metric> recall(double threshold = 0.5);
std::unique_ptr<Metric> sensitivity(double threshold = 0.5);
// tn / (tn + fp).
std::unique_ptr<Metric> specificity(double threshold = 0.5);
// 2·precision·recall / (precision + recall) = 2tp / (2tp + fp + fn).
std::unique_ptr<Metric> f1_score(double threshold = 0.5);
// Σ|p - y| / elements and Σ(p - y)² / elements.
std::unique_ptr<Metric> mean_absolute_error_metric();
std::unique_ptr<Metric> mean_squared_error_metric();

// Axon's running_average: the mean of the values observed so far, (avg·i + obs)/(i + 1).
class RunningAverage {
 public:
  void update(double value) {
    sum_ += value;
    ++count_;
  }
  std::optional<double> compute() const {
    return count_ ? std::optional<double>(sum_ / static_cast<double>(count_)) : std::nullopt;
  }
  void merge(const RunningAverage& other) {
    sum_ += other.sum_;
    count_ += other.count_;
  }
  void reset() { sum_ = 0.0, count_ = 0; }

 private:
  double sum_ = 0.0;
  int64_t count_ = 0;
};

}  // namespace axon
