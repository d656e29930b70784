// The bookkeeping both caching allocators (CPU and CUDA) keep for allocator_stats().
#pragma once

#include <algorithm>
#include <cstddef>

#include "axon/allocator.h"

namespace axon::detail {

struct StatsTracker : AllocatorStats {
  // A block taken from the system (aligned_alloc, cudaMalloc) or given back to it.
  void reserved(size_t bytes) {
    ++device_malloc_calls;
    reserved_bytes += bytes;
  }
  void released(size_t bytes) {
    ++device_free_calls;
    reserved_bytes -= bytes;
  }
  // A block handed to a tensor, or returned by it.
  void handed_out(size_t bytes) {
    allocated_bytes += bytes;
    peak_allocated_bytes = std::max(peak_allocated_bytes, allocated_bytes);
  }
  void returned(size_t bytes) { allocated_bytes -= bytes; }
};

}  // namespace axon::detail
