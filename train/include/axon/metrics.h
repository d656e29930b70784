// Metrics: plain numbers computed without autograd.
#pragma once

#include <cstdint>
#include <span>

#include "axon/tensor.h"

namespace axon {

// How many rows of scores {batch, classes} have their largest value at the label.
int64_t count_correct(const Tensor& scores, std::span<const int32_t> labels);
// count_correct / batch.
double accuracy(const Tensor& scores, std::span<const int32_t> labels);

}  // namespace axon
