#include "axon/reducer.h"

#include <fmt/format.h>

#include <chrono>
#include <stdexcept>

namespace axon {

Reducer::Reducer(Communicator& comm, std::vector<ReducerParameter> parameters, Tensor grads, ReducerOptions options)
    : comm_(comm), parameters_(std::move(parameters)), grads_(std::move(grads)), options_(options) {
  if (options_.bucket_bytes == 0 || options_.first_bucket_bytes == 0)
    throw std::invalid_argument("reducer: bucket sizes must be at least 1 byte");
  // The parameters must tile the flat buffer in layout order: buckets are slices of it.
  size_t expect = 0;
  for (const ReducerParameter& p : parameters_) {
    if (p.offset != expect || p.count != static_cast<size_t>(p.leaf.numel()))
      throw std::invalid_argument(fmt::format(
          "reducer: parameter {} ({} elements at offset {}) does not follow the previous one (expected offset {})", p.name,
          p.count, p.offset, expect));
    expect += p.count;
  }
  if (expect != static_cast<size_t>(grads_.numel()))
    throw std::invalid_argument(fmt::format("reducer: the parameters hold {} elements but the gradient buffer has {}", expect,
                                            grads_.numel()));

  // Reverse layout order = the order backward makes gradients ready.
  const size_t element = dtype_size(grads_.dtype());
  bucket_of_.assign(parameters_.size(), 0);
  for (size_t i = parameters_.size(); i-- > 0;) {
    const ReducerParameter& p = parameters_[i];
    // Bucket 0 is small (first_bucket_bytes) so that communication starts early in backward.
    const size_t cap = buckets_.size() == 1 ? options_.first_bucket_bytes : options_.bucket_bytes;
    if (buckets_.empty() || (buckets_.back().count + p.count) * element > cap) {
      buckets_.push_back(Bucket{});
      buckets_.back().offset = p.offset + p.count;
    }
    Bucket& b = buckets_.back();
    b.offset -= p.count;
    b.count += p.count;
    b.parameters.push_back(i);
    bucket_of_[i] = buckets_.size() - 1;
  }
  ready_.assign(parameters_.size(), false);
  for (size_t i = 0; i < parameters_.size(); ++i)
    hooks_.push_back(parameters_[i].leaf.add_grad_ready_hook([this, i](const Tensor&) { on_ready(i); }));
}

Reducer::~Reducer() {
  for (size_t i = 0; i < parameters_.size(); ++i) parameters_[i].leaf.remove_grad_ready_hook(hooks_[i]);
  // A bucket still in flight (an exception between backward and finalize) must finish before its
  // buffer can be reused; its error, if any, was or will be reported elsewhere.
  for (Bucket& b : buckets_) {
    if (!b.work) continue;
    try {
      b.work->wait();
    } catch (...) {
    }
  }
}

void Reducer::prepare_for_backward() {
  if (no_sync_) return;
  for (Bucket& b : buckets_) {
    // Left in flight by a step that threw between backward and finalize(): finish it first, so
    // its buffer is not written while MPI or NCCL still reads it. Its error, if any, was the
    // step's to report.
    if (b.work) {
      try {
        b.work->wait();
      } catch (...) {
      }
      b.work.reset();
    }
    b.pending = b.parameters.size();
    b.started_in_backward = false;
  }
  std::fill(ready_.begin(), ready_.end(), false);
  next_bucket_ = 0;
  armed_ = true;
}

void Reducer::on_ready(size_t parameter) {
  if (!armed_ || no_sync_ || ready_[parameter]) return;
  ready_[parameter] = true;
  --buckets_[bucket_of_[parameter]].pending;
  start_ready_buckets();
  // Drive the buckets in flight: MPI advances a non-blocking collective only inside MPI calls.
  for (size_t b = 0; b < next_bucket_; ++b)
    if (buckets_[b].work) buckets_[b].work->test();
}

void Reducer::start_ready_buckets() {
  if (buckets_.empty()) return;
  // The last bucket waits for finalize() (see the header).
  while (next_bucket_ + 1 < buckets_.size() && buckets_[next_bucket_].pending == 0) start(buckets_[next_bucket_++]);
}

void Reducer::start(Bucket& bucket) {
  bucket.started_in_backward = true;
  if (comm_.size() == 1 || bucket.count == 0) return;
  Tensor slice = slice_of(bucket);
  bucket.work = comm_.allreduce_async(slice, ReduceOp::avg);
}

Tensor Reducer::slice_of(const Bucket& bucket) const {
  return Tensor::view_of(grads_.storage(), grads_.offset() + bucket.offset, {static_cast<int64_t>(bucket.count)},
                         grads_.dtype());
}

void Reducer::finalize() {
  if (no_sync_) return;
  if (!armed_) throw std::logic_error("reducer: finalize without prepare_for_backward");
  armed_ = false;
  std::string unused;
  size_t unused_count = 0;
  for (size_t i = 0; i < parameters_.size(); ++i) {
    if (ready_[i]) continue;
    if (++unused_count <= 8) unused += (unused.empty() ? "" : ", ") + parameters_[i].name;
    if (options_.find_unused_parameters) --buckets_[bucket_of_[i]].pending;
  }
  if (unused_count > 8) unused += fmt::format(", ... ({} in all)", unused_count);
  if (unused_count > 0 && !options_.find_unused_parameters) {
    // Buckets already started must still complete before this rank gives up.
    for (Bucket& b : buckets_)
      if (b.work) {
        try {
          b.work->wait();
        } catch (...) {
        }
        b.work.reset();
      }
    throw CommError(fmt::format(
        "reducer on rank {} of {}: parameter(s) {} received no gradient in this backward pass (not used by the "
        "forward?); every parameter must take part, or enable find_unused_parameters",
        comm_.rank(), comm_.size(), unused));
  }
  const auto begin = std::chrono::steady_clock::now();
  std::exception_ptr failure;
  // Buckets not started during backward (the last one; with find_unused_parameters, those with
  // an unused parameter): backward is over, nothing is left to overlap them with, so each takes
  // the blocking all-reduce, in index order on every rank. With Open MPI that is coll/tuned's
  // MPI_Allreduce, measurably faster than the non-blocking coll/libnbc (docs/axon-bench.md).
  while (next_bucket_ < buckets_.size()) {
    Bucket& b = buckets_[next_bucket_++];
    b.started_in_backward = false;
    if (comm_.size() == 1 || b.count == 0 || failure) continue;
    Tensor slice = slice_of(b);
    try {
      comm_.allreduce(slice, ReduceOp::avg);
    } catch (...) {
      failure = std::current_exception();
    }
  }
  for (Bucket& b : buckets_) {
    if (!b.work) continue;
    try {
      b.work->wait();
    } catch (...) {
      if (!failure) failure = std::current_exception();
    }
    b.work.reset();
  }
  wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
  if (failure) std::rethrow_exception(failure);
}

}  // namespace axon
