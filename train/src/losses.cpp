#include "axon/losses.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "axon/autograd.h"
#include "axon/ops.h"

namespace axon {

Tensor softmax_cross_entropy(const Tensor& logits, std::span<const int32_t> labels) {
  if (logits.dim() != 2)
    throw std::invalid_argument("softmax_cross_entropy: logits must be {batch, classes}, got " + shape_str(logits.shape()));
  const int64_t batch = logits.size(0), classes = logits.size(1);
  if (static_cast<int64_t>(labels.size()) != batch)
    throw std::invalid_argument(fmt::format("softmax_cross_entropy: {} labels for logits of shape {}", labels.size(),
                                            shape_str(logits.shape())));
  if (batch == 0) throw std::invalid_argument("softmax_cross_entropy: empty batch");

  // Keep the probabilities for backward: they are the gradient up to the one-hot and the scale.
  Tensor probs = Tensor::empty(logits.shape());
  std::vector<int32_t> saved_labels(labels.begin(), labels.end());
  const float* x = logits.data();
  float* p = probs.data();
  double total = 0.0;
  for (int64_t r = 0; r < batch; ++r) {
    const int32_t label = labels[r];
    if (label < 0 || label >= classes)
      throw std::invalid_argument(fmt::format("softmax_cross_entropy: label {} at row {} is out of range for {} classes",
                                              label, r, classes));
    const float* row = x + r * classes;
    float* prow = p + r * classes;
    const float max_v = *std::max_element(row, row + classes);
    double denom = 0.0;
    for (int64_t c = 0; c < classes; ++c) {
      const float e = std::exp(row[c] - max_v);
      prow[c] = e;
      denom += e;
    }
    const float inv = static_cast<float>(1.0 / denom);
    for (int64_t c = 0; c < classes; ++c) prow[c] *= inv;
    total += std::log(denom) - static_cast<double>(row[label] - max_v);
  }
  Tensor loss = Tensor::scalar(static_cast<float>(total / static_cast<double>(batch)));

  return record("softmax_cross_entropy", loss, {logits},
                [probs, saved_labels, batch, classes](const Tensor& g, GradSlots& grads) {
                  const float scale = g.item() / static_cast<float>(batch);
                  float beta = 0.0f;
                  float* gx = grads.target(0, probs.shape(), beta);
                  const float* pp = probs.data();
                  for (int64_t r = 0; r < batch; ++r)
                    for (int64_t c = 0; c < classes; ++c) {
                      const int64_t i = r * classes + c;
                      const float d = (pp[i] - (c == saved_labels[r] ? 1.0f : 0.0f)) * scale;
                      gx[i] = beta == 0.0f ? d : gx[i] + d;
                    }
                });
}

Tensor mean_squared_error(const Tensor& prediction, const Tensor& target) {
  if (prediction.shape() != target.shape())
    throw std::invalid_argument(fmt::format("mean_squared_error: prediction {} and target {} differ in shape",
                                            shape_str(prediction.shape()), shape_str(target.shape())));
  return mean(square(sub(prediction, target)));
}

}  // namespace axon
