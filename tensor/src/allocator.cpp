// Device memory and copies: the CPU block cache, and dispatch to the CUDA allocator.
#include "axon/allocator.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

#include "allocator_stats.h"
#include "cuda/cuda_hooks.h"

namespace axon {

namespace {

// Training allocates the same large activations and gradients every step. Fresh large blocks
// come from mmap and cost a page fault per 4 KiB on first touch, so large freed blocks are kept
// for reuse, by exact size, up to a bound. Small blocks go straight to malloc, which pools them.
class BlockCache {
 public:
  static constexpr size_t kMinCachedBytes = 64 * 1024;
  static constexpr size_t kMaxCachedBytes = size_t{1} << 30;

  void* acquire(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (bytes >= kMinCachedBytes) {
      auto it = free_.find(bytes);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        cached_ -= bytes;
        stats_.handed_out(bytes);
        return p;
      }
    }
    void* p = std::aligned_alloc(64, bytes);
    if (!p) throw std::bad_alloc();
    stats_.reserved(bytes);
    stats_.handed_out(bytes);
    return p;
  }

  void release(void* p, size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.returned(bytes);
    if (bytes >= kMinCachedBytes && cached_ + bytes <= kMaxCachedBytes) {
      free_[bytes].push_back(p);
      cached_ += bytes;
      return;
    }
    give_back(p, bytes);
  }

  void empty() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [bytes, blocks] : free_)
      for (void* p : blocks) give_back(p, bytes);
    free_.clear();
    cached_ = 0;
  }

  AllocatorStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }

 private:
  void give_back(void* p, size_t bytes) {
    std::free(p);
    stats_.released(bytes);
  }

  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  size_t cached_ = 0;
  detail::StatsTracker stats_;
};

// Never destroyed: tensors in static storage may be freed after other statics are gone.
BlockCache& block_cache() {
  static BlockCache* cache = new BlockCache;
  return *cache;
}

// 64-byte alignment suits AVX-512 loads and cache lines; aligned_alloc needs a multiple of it.
size_t cpu_block_bytes(size_t bytes) { return std::max<size_t>(64, (bytes + 63) / 64 * 64); }

}  // namespace

void* device_allocate(Device device, size_t bytes) {
  if (device.is_cpu()) return block_cache().acquire(cpu_block_bytes(bytes));
  return cuda_detail::allocate(device.index, bytes);
}

void device_free(Device device, void* ptr, size_t bytes) noexcept {
  if (!ptr) return;
  if (device.is_cpu()) block_cache().release(ptr, cpu_block_bytes(bytes));
  else cuda_detail::free(device.index, ptr, bytes);
}

AllocatorStats allocator_stats(Device device) {
  return device.is_cpu() ? block_cache().stats() : cuda_detail::stats(device.index);
}

void empty_cache(Device device) {
  if (device.is_cpu()) block_cache().empty();
  else cuda_detail::empty_cache(device.index);
}

void copy_bytes(Device dst_device, void* dst, Device src_device, const void* src, size_t bytes) {
  if (bytes == 0) return;
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memmove(dst, src, bytes);
    return;
  }
  cuda_detail::copy(dst_device, dst, src_device, src, bytes);
}

}  // namespace axon
