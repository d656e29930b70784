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
    // While a graph is being captured, its blocks come from (and go back to) its private pool.
    // A pool that has no block of this size takes a cached one: nothing uses a cached block, and
    // all work is ordered on the one compute stream. It is the pool's until the graph is gone.
    for (FreeLists* lists : {active_pool_ ? &pools_.at(active_pool_).free : nullptr, &free_}) {
      if (!lists) continue;
      auto it = lists->find(rounded);
      if (it != lists->end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        stats_.handed_out(rounded);
        if (active_pool_) owner_[p] = active_pool_;
        return p;
      }
    }
    DeviceGuard guard(device_);
    void* p = nullptr;
    // During a graph capture this thread may not make "unsafe" calls; cudaMalloc is safe here (it
    // is not stream-ordered), so allow it for this one call, as PyTorch's allocator does.
    cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    if (active_pool_) check(cudaThreadExchangeStreamCaptureMode(&mode), "cudaThreadExchangeStreamCaptureMode", device_);
    cudaError_t err = cudaMalloc(&p, rounded);
    if (active_pool_) check(cudaThreadExchangeStreamCaptureMode(&mode), "cudaThreadExchangeStreamCaptureMode", device_);
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
    if (active_pool_) owner_[p] = active_pool_;
    return p;
  }

  void free(void* p, size_t bytes) noexcept {
    const size_t rounded = size_class(bytes);
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.returned(rounded);
    if (auto owned = owner_.find(p); owned != owner_.end()) {
      auto pool = pools_.find(owned->second);
      if (pool != pools_.end()) {
        pool->second.free[rounded].push_back(p);
        return;
      }
      owner_.erase(owned);  // its graph is gone: an ordinary cached block again
    } else if (active_pool_) {
      // A block from before the capture, freed during it: the captured kernels may still read or
      // write it at every replay, so it is not reused until the graph is gone.
      pools_.at(active_pool_).held.emplace_back(p, rounded);
      return;
    }
    free_[rounded].push_back(p);  // reused in stream order (one compute stream per device)
  }

  int begin_pool() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (active_pool_) throw std::runtime_error(cat("cuda:", device_, ": a CUDA graph capture is already under way"));
    active_pool_ = next_pool_++;
    pools_[active_pool_];
    return active_pool_;
  }

  void end_pool() {
    std::lock_guard<std::mutex> lock(mutex_);
    active_pool_ = 0;
  }

  // The graph that used the pool is destroyed: its free blocks, and the blocks held back during
  // its capture, become ordinary cached blocks (after the device has finished with them).
  void release_pool(int id) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto pool = pools_.find(id);
    if (pool == pools_.end()) return;
    if (active_pool_ == id) active_pool_ = 0;
    DeviceGuard guard(device_);
    check(cudaStreamSynchronize(state(device_).stream), "cudaStreamSynchronize before reusing a graph's memory", device_);
    for (auto& [bytes, blocks] : pool->second.free) {
      for (void* p : blocks) {
        owner_.erase(p);
        free_[bytes].push_back(p);
      }
    }
    for (auto& [p, bytes] : pool->second.held) free_[bytes].push_back(p);
    pools_.erase(pool);
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

  using FreeLists = std::unordered_map<size_t, std::vector<void*>>;
  // A CUDA graph's private memory: the blocks its captured kernels use keep their addresses, so
  // they must never be handed to other work while the graph may be replayed.
  struct Pool {
    FreeLists free;
    std::vector<std::pair<void*, size_t>> held;  // general blocks freed during the capture
  };

  int device_;
  std::mutex mutex_;
  FreeLists free_;
  std::unordered_map<int, Pool> pools_;
  std::unordered_map<void*, int> owner_;  // blocks made for a pool, and which pool
  int active_pool_ = 0, next_pool_ = 1;
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
int begin_graph_pool(int device) { return allocator(device).begin_pool(); }
void end_graph_pool(int device) { allocator(device).end_pool(); }
void release_graph_pool(int device, int pool) { allocator(device).release_pool(pool); }

}  // namespace axon::cuda_detail
