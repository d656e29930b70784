#include "axon/zero.h"

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

namespace axon {

ZeroSharding::ZeroSharding(Communicator& comm, Tensor values, Tensor grads, int stage)
    : comm_(comm), values_(std::move(values)), grads_(std::move(grads)), stage_(stage) {
  if (stage_ != 1 && stage_ != 2)
    throw std::invalid_argument(fmt::format("zero: stage must be 1 or 2, got {}", stage_));
  if (values_.numel() != grads_.numel() || values_.dtype() != grads_.dtype() || values_.device() != grads_.device())
    throw std::invalid_argument(fmt::format("zero: parameters ({} {} on {}) and gradients ({} {} on {}) differ",
                                            values_.numel(), dtype_name(values_.dtype()), values_.device().str(),
                                            grads_.numel(), dtype_name(grads_.dtype()), grads_.device().str()));
  n_ = static_cast<size_t>(values_.numel());
  const size_t world = static_cast<size_t>(comm_.size());
  shard_ = (n_ + world - 1) / world;
  const TensorOptions options{values_.dtype(), values_.device()};
  padded_ = Tensor::zeros({static_cast<int64_t>(padded_size())}, options);
  grad_shard_ = Tensor::zeros({static_cast<int64_t>(shard_)}, options);
  value_shard_ = Tensor::zeros({static_cast<int64_t>(shard_)}, options);
}

Tensor ZeroSharding::slice(const Tensor& t, size_t offset, size_t count) const {
  return Tensor::view_of(t.storage(), t.offset() + offset, {static_cast<int64_t>(count)}, t.dtype());
}

// Copies full[offset, offset + s) into shard, zero-padded past n.
static void copy_shard(const Tensor& full, size_t n, size_t offset, Tensor& shard) {
  const size_t s = static_cast<size_t>(shard.numel());
  const size_t have = offset < n ? std::min(s, n - offset) : 0;
  if (have < s) shard.fill(0.0);
  if (have > 0)
    Tensor::view_of(shard.storage(), shard.offset(), {static_cast<int64_t>(have)}, shard.dtype())
        .copy_from(Tensor::view_of(full.storage(), full.offset() + offset, {static_cast<int64_t>(have)}, full.dtype()));
}

Tensor& ZeroSharding::reduce_gradients() {
  if (stage_ == 1 || comm_.size() == 1) {
    copy_shard(grads_, n_, shard_offset(), grad_shard_);
    return grad_shard_;
  }
  // Stage 2: pad the local gradients to P, then each rank receives its averaged slice.
  slice(padded_, 0, n_).copy_from(grads_);
  if (padded_size() > n_) slice(padded_, n_, padded_size() - n_).fill(0.0);
  comm_.reduce_scatter(padded_, grad_shard_, ReduceOp::avg);
  return grad_shard_;
}

Tensor& ZeroSharding::parameter_shard() {
  copy_shard(values_, n_, shard_offset(), value_shard_);
  return value_shard_;
}

void ZeroSharding::gather_parameters() {
  if (comm_.size() == 1) {
    values_.copy_from(slice(value_shard_, 0, n_));
    return;
  }
  comm_.allgather(value_shard_, padded_);
  values_.copy_from(slice(padded_, 0, n_));
}

Tensor ZeroSharding::gather_to_root(const Tensor& shard) {
  if (static_cast<size_t>(shard.numel()) != shard_)
    throw std::invalid_argument(fmt::format("zero: a shard of {} elements on rank {}, expected {}", shard.numel(),
                                            comm_.rank(), shard_));
  constexpr int kTag = 0x2e70;  // apart from any other point-to-point traffic
  if (comm_.rank() != 0) {
    comm_.send(shard, 0, kTag);
    return Tensor();
  }
  const TensorOptions options{shard.dtype(), shard.device()};
  Tensor full = Tensor::empty({static_cast<int64_t>(n_)}, options);
  Tensor received = comm_.size() > 1 ? Tensor::empty({static_cast<int64_t>(shard_)}, options) : Tensor();
  for (int r = 0; r < comm_.size(); ++r) {
    const size_t offset = shard_ * static_cast<size_t>(r);
    const size_t have = offset < n_ ? std::min(shard_, n_ - offset) : 0;
    if (r > 0) comm_.recv(received, r, kTag);  // every rank sends, padding-only shards too
    if (have > 0) slice(full, offset, have).copy_from(slice(r == 0 ? shard : received, 0, have));
  }
  return full;
}

Tensor ZeroSharding::shard_of(const Tensor& full) const {
  if (static_cast<size_t>(full.numel()) != n_)
    throw std::invalid_argument(fmt::format("zero: a buffer of {} elements for {} parameters (rank {})", full.numel(), n_,
                                            comm_.rank()));
  Tensor shard = Tensor::zeros({static_cast<int64_t>(shard_)}, TensorOptions{full.dtype(), full.device()});
  copy_shard(full, n_, shard_offset(), shard);
  return shard;
}

}  // namespace axon
