// The caching CUDA allocator (see axon/allocator.h for the policy and why reuse is safe).

#include <algorithm>
#include <mutex>
#include <stdexcept>
#include <unordered_map>
#include <vector>

#include "../allocator_stats.h"
#include "cuda_hooks.h"
#include "runtime.h"

namespace axon::cuda_detail {

namespace {

constexpr size_t kSmallStep = 512;               // size classes below 1 MiB
constexpr size_t kLargeStep = size_t{2} << 20;   // size classes from 1 MiB on
constexpr size_t kSmallLimit = size_t{1} << 20;

size_t size_class(size_t bytes) {
  if (bytes == 0) bytes = 1;  // a unique, valid block even for an empty tensor
  const size_t step = bytes < kSmallLimit ? kSmallStep : kLargeStep;
  return (bytes + step - 1) / step * step;
}

class CachingAllocator {
 public:
  explicit CachingAllocator(int device) : device_(device) {}

  void* allocate(size_t bytes) {
    const size_t rounded = size_class(bytes);
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_.find(rounded);
    if (it != free_.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      stats_.handed_out(rounded);
      return p;
    }
    DeviceGuard guard(device_);
    void* p = nullptr;
    cudaError_t err = cudaMalloc(&p, rounded);
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      release_cached();  // cached blocks of other sizes may make room
      err = cudaMalloc(&p, rounded);
    }
    // Anything but "out of memory" (say a sticky error left by an earlier kernel) is not an
    // allocation failure: check() reports it as what it is.
    if (err != cudaSuccess && err != cudaErrorMemoryAllocation) check(err, "cudaMalloc", device_);
    if (err != cudaSuccess) {
      cudaGetLastError();
      throw std::runtime_error(cat("cuda:", device_, ": cannot allocate ", rounded, " bytes: ", cudaGetErrorString(err), " (", stats_.allocated_bytes, " bytes allocated by Axon, ", stats_.reserved_bytes, " reserved, peak ", stats_.peak_allocated_bytes, ")"));
    }
    stats_.reserved(rounded);
    stats_.handed_out(rounded);
    return p;
  }

  void free(void* p, size_t bytes) noexcept {
    const size_t rounded = size_class(bytes);
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.returned(rounded);
    free_[rounded].push_back(p);  // reused in stream order (one compute stream per device)
  }

  void empty_cache() {
    std::lock_guard<std::mutex> lock(mutex_);
    release_cached();
  }

  AllocatorStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }

 private:
  // Caller holds mutex_. Waits for queued kernels first: a cached block may still be in use by one.
  void release_cached() {
    DeviceGuard guard(device_);
    check(cudaStreamSynchronize(state(device_).stream), "cudaStreamSynchronize before freeing cached blocks", device_);
    for (auto& [bytes, blocks] : free_) {
      for (void* p : blocks) {
        check(cudaFree(p), "cudaFree", device_);
        stats_.released(bytes);
      }
    }
    free_.clear();
  }

  int device_;
  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  detail::StatsTracker stats_;
};

CachingAllocator& allocator(int device) {
  static std::mutex mutex;
  static auto* allocators = new std::vector<CachingAllocator*>;  // never destroyed, like the CPU cache
  state(device);  // validates the index and sets the device up
  std::lock_guard<std::mutex> lock(mutex);
  if (allocators->size() <= static_cast<size_t>(device)) allocators->resize(static_cast<size_t>(device) + 1, nullptr);
  CachingAllocator*& a = (*allocators)[static_cast<size_t>(device)];
  if (!a) a = new CachingAllocator(device);
  return *a;
}

}  // namespace

void* allocate(int device, size_t bytes) { return allocator(device).allocate(bytes); }
void free(int device, void* ptr, size_t bytes) noexcept { allocator(device).free(ptr, bytes); }
AllocatorStats stats(int device) { return allocator(device).stats(); }
void empty_cache(int device) { allocator(device).empty_cache(); }

}  // namespace axon::cuda_detail
