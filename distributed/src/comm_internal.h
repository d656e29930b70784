// Argument checks shared by the communicator backends (not a public header).
#pragma once

#include "axon/communicator.h"

namespace axon::detail {

// Throws CommError naming op, rank and world size unless t is f32, f64 or bf16.
void check_collective_tensor(const char* op, const Tensor& t, const Communicator& comm);
// For reduce_scatter and allgather: same dtype and device, whole.numel() == size() * block.numel().
void check_scatter_shapes(const char* op, const Tensor& whole, const Tensor& block, const Communicator& comm);
// A peer of send/recv: another rank of this world.
void check_peer(const char* op, int peer, const Communicator& comm);

}  // namespace axon::detail
