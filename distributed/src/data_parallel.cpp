#include "axon/data_parallel.h"

#include <fmt/format.h>

#include <vector>

#include "axon/backend.h"

namespace axon {

DataParallel::DataParallel(Communicator& comm, std::span<float> params, std::span<float> grads)
    : DataParallel(comm, Tensor::from_blob(params.data(), {static_cast<int64_t>(params.size())}),
                   Tensor::from_blob(grads.data(), {static_cast<int64_t>(grads.size())})) {}

DataParallel::DataParallel(Communicator& comm, Tensor params, Tensor grads)
    : comm_(comm), params_(std::move(params)), grads_(std::move(grads)) {
  if (params_.numel() != grads_.numel())
    throw std::invalid_argument(
        fmt::format("data parallel: {} parameters but {} gradients", params_.numel(), grads_.numel()));
  if (params_.device() != grads_.device() || params_.dtype() != grads_.dtype())
    throw std::invalid_argument(fmt::format("data parallel: parameters ({} on {}) and gradients ({} on {}) differ",
                                            dtype_name(params_.dtype()), params_.device().str(),
                                            dtype_name(grads_.dtype()), grads_.device().str()));
}

void DataParallel::verify_layout(uint64_t fingerprint) {
  // Each rank writes its own (fingerprint halves, count) into its row; the sum shows every rank's.
  // The values fit a double exactly (each below 2^32).
  const int n = comm_.size(), me = comm_.rank();
  std::vector<double> table(static_cast<size_t>(n) * 3, 0.0);
  table[me * 3 + 0] = static_cast<double>(fingerprint >> 32);
  table[me * 3 + 1] = static_cast<double>(fingerprint & 0xffffffffu);
  table[me * 3 + 2] = static_cast<double>(params_.numel());
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
  if (comm_.size() == 1 || grads_.numel() == 0) return;
  comm_.allreduce(grads_, ReduceOp::sum);
  // Scaled where the gradients live (an in-place kernel on their device).
  backend(grads_.device()).unary(UnaryOp::mul_scalar, grads_, 1.0 / comm_.size(), grads_);
}

}  // namespace axon
