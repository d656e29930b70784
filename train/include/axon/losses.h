// Loss functions. Each returns a scalar tensor (mean over the batch) that supports backward().
#pragma once

#include <cstdint>
#include <span>

#include "axon/tensor.h"

namespace axon {

// Cross-entropy of softmax(logits) against integer class labels, fused and numerically stable
// (log-sum-exp with the row maximum subtracted). logits {batch, classes}; labels in [0, classes).
// Gradient: (softmax(logits) - onehot(labels)) / batch.
Tensor softmax_cross_entropy(const Tensor& logits, std::span<const int32_t> labels);

// Mean squared error over all elements.
Tensor mean_squared_error(const Tensor& prediction, const Tensor& target);

}  // namespace axon
