// Device memory: one caching allocator per device.
//
// CPU: large freed blocks are kept by exact size for reuse (a fresh mmap'd block costs a page fault
// per 4 KiB on first touch). CUDA: PyTorch's caching-allocator idea in its simplest form. Requests
// are rounded up to a size class (512 B steps below 1 MiB, 2 MiB steps above), freed blocks go to
// a free list per size class and are handed out again, so a training step repeating the same
// shapes calls cudaMalloc only in its first iteration. Every kernel of a device runs on that
// device's one compute stream (axon/cuda.h), so a block freed on the host can be reused at once:
// stream order puts its next user after its last one. Memory used by another stream (NCCL's) is
// kept alive by its tensor until that stream's work is waited on.
#pragma once

#include <cstddef>
#include <cstdint>

#include "axon/dtype.h"

namespace axon {

struct AllocatorStats {
  size_t allocated_bytes = 0;       // in blocks handed out now (rounded sizes)
  size_t reserved_bytes = 0;        // held from the system: handed out plus cached
  size_t peak_allocated_bytes = 0;  // highest allocated_bytes so far
  uint64_t device_malloc_calls = 0; // cudaMalloc (or aligned_alloc) calls so far
  uint64_t device_free_calls = 0;   // cudaFree (or free) calls so far
};

// Allocates `bytes` (0 allowed: a valid, unique block) on `device`. Throws std::bad_alloc on the
// CPU, std::runtime_error naming the device and size on CUDA (out of memory, no such device,
// built without CUDA).
void* device_allocate(Device device, size_t bytes);
// Returns a block from device_allocate with the same device and size. Never throws.
void device_free(Device device, void* ptr, size_t bytes) noexcept;
AllocatorStats allocator_stats(Device device);
// Gives cached blocks back to the system (cudaFree / free).
void empty_cache(Device device);

}  // namespace axon
