// What the CUDA part of the tensor library (tensor/src/cuda/*.cu, built when CUDA is enabled)
// offers the rest of it. Without CUDA, cuda_stubs.cpp defines these to throw.
#pragma once

#include <cstddef>

#include "axon/allocator.h"
#include "axon/backend.h"

namespace axon::cuda_detail {

void* allocate(int device, size_t bytes);
void free(int device, void* ptr, size_t bytes) noexcept;
AllocatorStats stats(int device);
void empty_cache(int device);
Backend& backend(int device);
// CUDA graph memory (allocator.cu): between begin and end, the device's allocations come from a
// new private pool, kept for the graph until release_graph_pool.
int begin_graph_pool(int device);
void end_graph_pool(int device);
void release_graph_pool(int device, int pool);
// dst/src on any devices, at least one of them CUDA.
void copy(Device dst_device, void* dst, Device src_device, const void* src, size_t bytes);

}  // namespace axon::cuda_detail
