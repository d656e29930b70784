// Data-parallel training over a Communicator: every rank holds the whole model, computes
// gradients on its own shard of each batch, and the gradients are averaged before the step.
//
// Parameters and gradients are flat buffers (see axon::Parameters), so the average is a single
// all-reduce here. Bucketed all-reduce overlapped with backward uses the tensors' grad-ready
// hooks to reduce a bucket (a slice of this same flat buffer) as soon as it is complete.
#pragma once

#include <cstdint>
#include <span>

#include "axon/communicator.h"

namespace axon {

class DataParallel {
 public:
  // Host f32 buffers, or flat tensors of one dtype and device (GPU buffers are reduced by the
  // communicator: NCCL on the GPU, or MPI staged through host memory).
  DataParallel(Communicator& comm, std::span<float> params, std::span<float> grads);
  DataParallel(Communicator& comm, Tensor params, Tensor grads);

  // Checks that every rank has a model of the same layout (fingerprint: a hash of the parameter
  // names and shapes) and the same parameter count; throws naming the first mismatching rank.
  void verify_layout(uint64_t fingerprint);
  // Rank 0's parameters to every rank, so all start identical.
  void broadcast_parameters();
  // Sum the gradients over ranks and divide by the world size.
  void average_gradients();

  Communicator& comm() { return comm_; }

 private:
  Communicator& comm_;
  Tensor params_, grads_;
};

}  // namespace axon
