#include "axon/data_parallel.h"

#include <fmt/format.h>

#include <vector>

namespace axon {

DataParallel::DataParallel(Communicator& comm, std::span<float> params, std::span<float> grads)
    : comm_(comm), params_(params), grads_(grads) {
  if (params.size() != grads.size())
    throw std::invalid_argument(
        fmt::format("data parallel: {} parameters but {} gradients", params.size(), grads.size()));
}

void DataParallel::verify_layout(uint64_t fingerprint) {
  // Each rank writes its own (fingerprint halves, count) into its row; the sum shows every rank's.
  // The values fit a double exactly (each below 2^32).
  const int n = comm_.size(), me = comm_.rank();
  std::vector<double> table(static_cast<size_t>(n) * 3, 0.0);
  table[me * 3 + 0] = static_cast<double>(fingerprint >> 32);
  table[me * 3 + 1] = static_cast<double>(fingerprint & 0xffffffffu);
  table[me * 3 + 2] = static_cast<double>(params_.size());
  comm_.allreduce(table, ReduceOp::sum);
  for (int r = 1; r < n; ++r) {
    if (table[r * 3 + 2] != table[2])
      throw CommError(fmt::format("data parallel: rank {} has {} parameters but rank 0 has {} (seen on rank {})", r,
                                  table[r * 3 + 2], table[2], me));
    if (table[r * 3] != table[0] || table[r * 3 + 1] != table[1])
      throw CommError(fmt::format(
          "data parallel: rank {} built a different model than rank 0 (parameter names or shapes differ; seen on rank {})",
          r, me));
  }
}

void DataParallel::broadcast_parameters() { comm_.broadcast(params_, 0); }

void DataParallel::average_gradients() {
  if (comm_.size() == 1) return;
  comm_.allreduce(grads_, ReduceOp::sum);
  const float scale = 1.0f / static_cast<float>(comm_.size());
  for (float& g : grads_) g *= scale;
}

}  // namespace axon
