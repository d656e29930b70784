// Loss functions. Each returns a scalar tensor (mean over the batch) that supports backward().
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "axon/tensor.h"

namespace axon {

// Cross-entropy of softmax(logits) against integer class labels, fused and numerically stable
// (log-sum-exp with the row maximum subtracted). logits {batch, classes}; labels in [0, classes).
// Gradient: (softmax(logits) - onehot(labels)) / batch. The loss is f32 on the logits' device, the
// logits f32, f64 or bf16 (bf16 logits compute in f32). Throws std::invalid_argument naming the
// shapes, or the label and row, when a host label is out of range.
Tensor softmax_cross_entropy(const Tensor& logits, std::span<const int32_t> labels);
// The same with labels as an i32 tensor {batch} on the logits' device (no host round trip). On a
// GPU, labels are not range-checked; an out-of-range label makes the loss NaN.
Tensor softmax_cross_entropy(const Tensor& logits, const Tensor& labels);

// Mean squared error over all elements.
Tensor mean_squared_error(const Tensor& prediction, const Tensor& target);

// ---- the loss library (Axon.Losses; tests/train/test_losses.cpp checks values and gradients
// against PyTorch or the formula) ----
//
// Arguments are (prediction, target), as in PyTorch, both floating tensors {batch, ...} of one
// dtype on one device (f32, f64 or bf16 computing in f32). Each loss is computed per sample,
// reducing the axes after the batch axis as Axon does (the mean over them unless said otherwise),
// then reduced over the batch:
//   Reduction::none  {batch} per-sample losses;  mean  their mean ({});  sum  their sum ({}).
// Every loss is built from differentiable tensor ops, so backward() works on CPU and GPU. An empty
// batch gives {0} (none) or 0 (sum) and throws for mean. Errors (std::invalid_argument) name the
// loss and the shapes, dtypes or devices, or the option and its value.
//
// Probabilities (from_logits = false) are clipped to [eps, 1 - eps] with eps = 1e-7 before their
// logarithm (as Elixir Axon and Keras): log 0 gives a finite loss and gradient. PyTorch instead
// clamps the logarithm at -100, so the two differ only for probabilities below 1e-7.
enum class Reduction { none, mean, sum };

struct BinaryCrossEntropyOptions {
  bool from_logits = false;       // prediction holds logits: log-sigmoid computed stably (±1e4 fine)
  double positive_weight = 1.0;   // weight of the y·log p term (PyTorch's pos_weight)
  double negative_weight = 1.0;   // weight of the (1-y)·log(1-p) term
  Reduction reduction = Reduction::mean;
};
// -(w+·y·log p + w-·(1-y)·log(1-p)), mean over the non-batch axes. target in [0, 1].
Tensor binary_cross_entropy(const Tensor& prediction, const Tensor& target, BinaryCrossEntropyOptions options = {});

struct CategoricalCrossEntropyOptions {
  bool from_logits = false;           // prediction holds logits: log_softmax over the last axis
  std::vector<double> class_weights;  // empty, or one per class: mean divides by Σ weights (PyTorch)
  double label_smoothing = 0.0;       // target·(1-s) + s/classes, as PyTorch's label_smoothing
  Reduction reduction = Reduction::mean;
};
// -Σ_c w_c·y_c·log p_c per sample, prediction and target {batch, classes} (target a distribution).
Tensor categorical_cross_entropy(const Tensor& prediction, const Tensor& target,
                                 CategoricalCrossEntropyOptions options = {});
// The same with sparse labels: the class index of each sample, in [0, classes).
Tensor categorical_cross_entropy(const Tensor& prediction, std::span<const int32_t> labels,
                                 CategoricalCrossEntropyOptions options = {});
// Label smoothing on a dense target {batch, classes}: target·(1 - smoothing) + smoothing/classes.
Tensor apply_label_smoothing(const Tensor& target, double smoothing = 0.1);

Tensor mean_squared_error(const Tensor& prediction, const Tensor& target, Reduction reduction);
// |p - y|, mean over the non-batch axes.
Tensor mean_absolute_error(const Tensor& prediction, const Tensor& target, Reduction reduction = Reduction::mean);
// 0.5·d² where |d| <= delta, else delta·(|d| - 0.5·delta), d = p - y (PyTorch HuberLoss).
Tensor huber(const Tensor& prediction, const Tensor& target, double delta = 1.0, Reduction reduction = Reduction::mean);
// log(cosh(p - y)), computed as |d| + log(1 + exp(-2|d|)) - log 2 (no overflow).
Tensor log_cosh(const Tensor& prediction, const Tensor& target, Reduction reduction = Reduction::mean);
// Σ y·log(y/p) over the non-batch axes (p and y distributions; y = 0 terms are 0; p clipped).
Tensor kl_divergence(const Tensor& prediction, const Tensor& target, Reduction reduction = Reduction::mean);
// max(0, 1 - y·p), y in {-1, 1}.
Tensor hinge(const Tensor& prediction, const Tensor& target, Reduction reduction = Reduction::mean);
// max(0, 1 + max_{c: y_c = 0} p_c - Σ_c y_c·p_c), target one-hot {batch, classes}.
Tensor categorical_hinge(const Tensor& prediction, const Tensor& target, Reduction reduction = Reduction::mean);
// log(1 + exp(-y·p)), y in {-1, 1} (PyTorch SoftMarginLoss).
Tensor soft_margin(const Tensor& prediction, const Tensor& target, Reduction reduction = Reduction::mean);
// p - y·log(p + eps) with eps 1e-7 (Keras/Axon; PyTorch PoissonNLLLoss(log_input=False, eps=1e-8) up to eps).
Tensor poisson(const Tensor& prediction, const Tensor& target, Reduction reduction = Reduction::mean);
// -cos(p, y) per sample over the non-batch axes, norms floored at eps (Axon: axes [1], eps 1e-6).
Tensor cosine_similarity(const Tensor& prediction, const Tensor& target, double eps = 1e-6,
                         Reduction reduction = Reduction::mean);
// max(0, -y·(p1 - p2) + margin), y in {-1, 1} (PyTorch MarginRankingLoss), mean over non-batch axes.
Tensor margin_ranking(const Tensor& prediction1, const Tensor& prediction2, const Tensor& target, double margin = 0.0,
                      Reduction reduction = Reduction::mean);

// Connectionist temporal classification (Graves et al. 2006), as torch.nn.functional.ctc_loss:
// log_probs {batch, time, classes} (log-softmax outputs), targets[b] the label sequence of sample b
// (no blanks; lengths may differ), input_lengths[b] the frames of sample b that count (empty: all).
// Per-sample loss -log p(target | input) by the forward-backward recursions in float64 on the host
// (one copy per call from a GPU); mean divides each sample's loss by its target length (at least
// 1) before averaging, as PyTorch. An impossible alignment (too few frames) gives +inf with a zero
// gradient (PyTorch's zero_infinity=false gives inf too). The gradient is exact with respect to
// log_probs; through log_softmax it equals PyTorch's.
Tensor connectionist_temporal_classification(const Tensor& log_probs, const std::vector<std::vector<int32_t>>& targets,
                                             std::span<const int64_t> input_lengths = {}, int64_t blank = 0,
                                             Reduction reduction = Reduction::mean);

}  // namespace axon
