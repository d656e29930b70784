// ZeRO stages 1 and 2 (Rajbhandari et al., "ZeRO: Memory Optimizations Toward Training Trillion
// Parameter Models", SC 2020, §5.1–5.2) over Axon's flat parameter and gradient buffers.
//
// The flat buffers of n elements are padded to P = world_size × s elements (s = ceil(n / world));
// rank r owns the shard [r·s, (r+1)·s). Each step a rank updates only its shard, with an optimizer
// whose state therefore holds s values per buffer instead of n (the memory ZeRO-1 saves), and the
// updated shards are all-gathered back into every rank's full parameters.
//   stage 1: the gradients are all-reduced as without ZeRO (the bucketed reducer), then each rank
//            takes its slice;
//   stage 2: the gradients are reduce-scattered, so each rank receives only its averaged slice
//            (half the traffic of an all-reduce). The full local gradient buffer still exists,
//            because autograd writes into it: the memory of gradients is not sharded here.
// Padding elements have value 0 and gradient 0, so element-wise optimizers leave them at 0.
// The result equals unsharded training exactly for element-wise optimizers (SGD, Adam, AdamW),
// up to the order in which the all-reduce and the reduce-scatter sum the ranks (≤ 1 ulp).
#pragma once

#include <cstddef>

#include "axon/communicator.h"

namespace axon {

class ZeroSharding {
 public:
  // values and grads: the flat buffers {n} (same dtype and device). stage: 1 or 2. Throws
  // std::invalid_argument for another stage or buffers that differ.
  ZeroSharding(Communicator& comm, Tensor values, Tensor grads, int stage);

  int stage() const { return stage_; }
  size_t shard_size() const { return shard_; }                // s, elements
  size_t shard_offset() const { return shard_ * static_cast<size_t>(comm_.rank()); }
  size_t padded_size() const { return shard_ * static_cast<size_t>(comm_.size()); }  // P

  // This rank's averaged gradient shard {s}: stage 1 copies it from the (already averaged) full
  // gradients; stage 2 reduce-scatters the local gradients (a collective: every rank calls it).
  Tensor& reduce_gradients();
  // This rank's parameter shard {s}, refreshed from the full parameters: the optimizer updates it.
  Tensor& parameter_shard();
  // All-gathers every rank's updated parameter shard into the full parameters (a collective).
  void gather_parameters();

  // For exporting a whole buffer (checkpoints write one file per rank instead): gathers every
  // rank's shard {s} into the full buffer {n} on rank 0 only (returned there; an undefined tensor
  // on the other ranks), by point-to-point messages, so no other rank ever holds the whole state.
  // A collective: every rank calls it. And this rank's padded shard {s} of a full buffer {n}.
  // Both throw std::invalid_argument naming the sizes that do not fit.
  Tensor gather_to_root(const Tensor& shard);
  Tensor shard_of(const Tensor& full) const;

 private:
  Tensor slice(const Tensor& t, size_t offset, size_t count) const;

  Communicator& comm_;
  Tensor values_, grads_;
  int stage_;
  size_t n_ = 0, shard_ = 0;
  Tensor padded_;        // {P} staging: padded gradients (stage 2) and gathered parameters
  Tensor grad_shard_;    // {s}
  Tensor value_shard_;   // {s}
};

}  // namespace axon
