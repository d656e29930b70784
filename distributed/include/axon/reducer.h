// The gradient reducer: all-reduces gradients in buckets while backward is still running (the
// design of PyTorch DDP's Reducer, Li et al., "PyTorch Distributed", VLDB 2020, §3.2).
//
// Gradients live in one flat buffer (axon::Parameters), so a bucket is simply a slice of it:
// parameters are taken in reverse order of the layout, which is the order backward produces
// their gradients, and grouped into contiguous slices of at most `first_bucket_bytes` (the first
// bucket, small so that communication starts early) and then `bucket_bytes` each. Each parameter
// tensor gets a grad-ready hook; when a bucket's last gradient is ready, its all-reduce (avg)
// starts asynchronously. Buckets always start in index order, so every rank issues the same
// collectives in the same order even when its backward makes gradients ready in another order.
//
// The last bucket (holding the start of the flat buffer, i.e. the first layer) is reduced by
// finalize(), never from a hook, with the blocking all-reduce: backward has ended by then, so
// there is nothing to overlap it with, and the caller can still change that slice after backward
// (the trainer writes a NaN there to carry a non-finite loss to every rank).
//
// Per step: prepare_for_backward(); loss.backward(); finalize(). While no_sync is set (gradient
// accumulation), hooks and finalize do nothing and gradients accumulate locally; the first step
// after it is cleared all-reduces the accumulated sum.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "axon/communicator.h"

namespace axon {

struct ReducerOptions {
  size_t bucket_bytes = 25u << 20;       // PyTorch's bucket_cap_mb default, 25 MiB
  size_t first_bucket_bytes = 1u << 20;  // PyTorch's first bucket, 1 MiB
  // A parameter whose gradient is not produced in a backward pass (a layer unused by this
  // forward): false makes finalize() throw naming it; true reduces its (zero or accumulated)
  // gradient anyway, like DDP's find_unused_parameters=True.
  bool find_unused_parameters = false;
};

// One parameter the reducer watches: its name (for errors), the leaf tensor whose gradient
// hook fires, and where its gradient lies in the flat buffer (in elements).
struct ReducerParameter {
  std::string name;
  Tensor leaf;
  size_t offset = 0;
  size_t count = 0;
};

// A bucket: a plain record, public so that tests and tools can show the layout.
struct Bucket {
  size_t offset = 0;                // first element in the flat gradient buffer
  size_t count = 0;                 // elements
  std::vector<size_t> parameters;   // indices into the reducer's parameter list
  size_t pending = 0;               // gradients not yet ready in this backward pass
  std::shared_ptr<Work> work;       // the all-reduce in flight, or null
  bool started_in_backward = false; // started from a hook, before backward ended (this step)
};

class Reducer {
 public:
  // `grads` is the flat gradient buffer {n} (f32, f64 or bf16, any device) that the parameters'
  // gradients are views of; parameters must tile it exactly, in layout order. Registers one
  // grad-ready hook per parameter. Throws std::invalid_argument naming the parameter that does
  // not fit, or a bucket size of 0.
  Reducer(Communicator& comm, std::vector<ReducerParameter> parameters, Tensor grads, ReducerOptions options = {});
  // Removes its hooks: a reducer that goes away leaves none behind.
  ~Reducer();
  Reducer(const Reducer&) = delete;
  Reducer& operator=(const Reducer&) = delete;

  // Arms the buckets for the next backward pass (first waiting for any bucket a failed step left
  // in flight).
  void prepare_for_backward();
  // After backward: reduces what has not started (the last bucket; with find_unused_parameters,
  // buckets with unused parameters) with blocking all-reduces in index order, waits for every
  // bucket, and leaves the gradients averaged
  // over the ranks. Throws CommError naming the parameters that received no gradient (unless
  // find_unused_parameters), or the collective that failed. When one rank skips a parameter that
  // others use, those others wait for it in that bucket's all-reduce: the heartbeat watchdog
  // (axonrun) or AXON_COLLECTIVE_TIMEOUT then names the stuck rank.
  void finalize();

  // Gradient accumulation: while true, backward passes only accumulate locally.
  void set_no_sync(bool value) { no_sync_ = value; }
  bool no_sync() const { return no_sync_; }

  const std::vector<Bucket>& buckets() const { return buckets_; }
  const std::vector<ReducerParameter>& parameters() const { return parameters_; }
  // Seconds finalize() has spent waiting for all-reduces to finish, summed over steps (the
  // communication time not hidden behind backward). Host time: NCCL's wait() does not block the
  // host, so with NCCL this is only the time to order the streams.
  double wait_seconds() const { return wait_seconds_; }

 private:
  void on_ready(size_t parameter);
  // From the hooks: starts the complete buckets that are next in index order (never the last).
  void start_ready_buckets();
  void start(Bucket& bucket);
  Tensor slice_of(const Bucket& bucket) const;  // the bucket's view of the gradient buffer

  Communicator& comm_;
  std::vector<ReducerParameter> parameters_;
  std::vector<size_t> bucket_of_;  // parameter index -> bucket index
  std::vector<bool> ready_;        // per parameter, in this backward pass
  std::vector<uint64_t> hooks_;    // hook handles, per parameter
  Tensor grads_;
  ReducerOptions options_;
  std::vector<Bucket> buckets_;
  size_t next_bucket_ = 0;  // buckets start in index order
  bool armed_ = false;
  bool no_sync_ = false;
  double wait_seconds_ = 0.0;
};

}  // namespace axon
