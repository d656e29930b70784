#include "axon/metrics.h"

#include <fmt/format.h>

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
