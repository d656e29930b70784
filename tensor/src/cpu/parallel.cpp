#include "parallel.h"

#include <pthread.h>

#ifdef AXON_PARALLEL_OPENMP
#include <omp.h>
#endif

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "axon/tensor.h"
#include "onednn_conv.h"

namespace axon::cpu_detail {

namespace {

// True on pool workers, and on a caller while it runs its own range: calls from there run serially
// (a worker waiting for its own pool would deadlock).
thread_local bool t_inside_pool = false;

// A forked child inherits the pool's state (and OpenMP's team) but none of their threads: it runs
// serially.
std::atomic<bool> g_forked_child{false};
const bool g_fork_handler = [] {
  return pthread_atfork(nullptr, nullptr, [] { g_forked_child.store(true, std::memory_order_relaxed); }) == 0;
}();

class Pool {
 public:
  // Never destroyed: detached workers may still be waiting on its condition variable at exit.
  static Pool& instance() {
    static Pool* pool = new Pool;
    return *pool;
  }

  // Runs part(0) here and part(1..parts−1) on workers; false (nothing run) when another thread's
  // call holds the pool, or when no worker thread can be started. Not called after fork()
  // (parallel_for checks).
  bool try_run(int64_t& parts, const std::function<void(int64_t)>& part) {
    std::unique_lock<std::mutex> call(call_mutex_, std::try_to_lock);
    if (!call.owns_lock()) return false;
    while (static_cast<int64_t>(workers_) < parts - 1) {
      try {
        std::thread(&Pool::work, this, static_cast<int64_t>(workers_ + 1)).detach();
      } catch (const std::system_error&) {  // no thread to be had (a pids limit): use those we have
        break;
      }
      ++workers_;
    }
    parts = std::min<int64_t>(parts, static_cast<int64_t>(workers_) + 1);
    if (parts <= 1) return false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = &part;
      parts_ = parts;
      pending_ = parts - 1;
      error_ = nullptr;
      ++generation_;
    }
    wake_.notify_all();
    std::exception_ptr own_error;
    t_inside_pool = true;
    try {
      part(0);
    } catch (...) {
      own_error = std::current_exception();
    }
    t_inside_pool = false;
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return pending_ == 0; });
    job_ = nullptr;
    if (own_error) std::rethrow_exception(own_error);
    if (error_) std::rethrow_exception(error_);
    return true;
  }

 private:
  void work(int64_t index) {
    t_inside_pool = true;
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      if (index >= parts_) continue;  // this call needs fewer threads
      const std::function<void(int64_t)>* job = job_;
      lock.unlock();
      std::exception_ptr error;
      try {
        (*job)(index);
      } catch (...) {
        error = std::current_exception();
      }
      lock.lock();
      if (error && !error_) error_ = error;
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::mutex call_mutex_;  // one call at a time
  size_t workers_ = 0;     // started so far (only grows), guarded by call_mutex_
  std::mutex mutex_;       // guards everything below
  std::condition_variable wake_, done_;
  const std::function<void(int64_t)>* job_ = nullptr;
  int64_t parts_ = 0, pending_ = 0;
  uint64_t generation_ = 0;
  std::exception_ptr error_;
};

}  // namespace

#ifdef AXON_PARALLEL_OPENMP
namespace {
// With oneDNN, whose convolutions run on an OpenMP team, the loops share that team instead of
// waking a second pool: one set of workers (still spinning from the last convolution, so they
// start at once) rather than two sets competing for the same cores.
// One caller at a time, as the pool: each calling thread would otherwise get a team of its own.
std::mutex g_openmp_call;

bool run_on_openmp(int64_t n, int64_t parts, const std::function<void(int64_t, int64_t)>& body) {
  if (omp_in_parallel()) return false;
  std::unique_lock<std::mutex> call(g_openmp_call, std::try_to_lock);
  if (!call.owns_lock()) return false;
  std::vector<std::exception_ptr> errors(static_cast<size_t>(parts));
#pragma omp parallel num_threads(static_cast<int>(parts))
  {
    const int64_t granted = omp_get_num_threads(), i = omp_get_thread_num();
    t_inside_pool = true;
    try {
      body(n * i / granted, n * (i + 1) / granted);
    } catch (...) {
      errors[static_cast<size_t>(i)] = std::current_exception();
    }
    t_inside_pool = false;
  }
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
  return true;
}
}  // namespace
#endif

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& body) {
  (void)g_fork_handler;
  if (n <= 0) return;
  const int64_t parts = std::min<int64_t>(num_threads(), n / std::max<int64_t>(grain, 1));
  // After fork() neither the pool's workers nor OpenMP's team exist in this process.
  if (parts <= 1 || t_inside_pool || g_forked_child.load(std::memory_order_relaxed)) return body(0, n);
#ifdef AXON_PARALLEL_OPENMP
  // Only once oneDNN's team exists: a process without convolutions (an MLP) keeps the pool, whose
  // workers sleep between calls, while OpenMP's spin and would slow OpenBLAS's threads 2-3×.
  if (onednn_team_started() && run_on_openmp(n, parts, body)) return;
#endif
  // The pool may grant fewer parts than asked (see try_run); `granted` is what it runs.
  int64_t granted = parts;
  const std::function<void(int64_t)> part = [&](int64_t i) { body(n * i / granted, n * (i + 1) / granted); };
  if (!Pool::instance().try_run(granted, part)) body(0, n);
}

}  // namespace axon::cpu_detail
