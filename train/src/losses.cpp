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

}  // namespace axon
