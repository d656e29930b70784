// Loss functions. Each returns a scalar tensor (mean over the batch) that supports backward().
#pragma once

#include <cstdint>
#include <span>

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

}  // namespace axon
