// A Communicator decorator that sums the wall time this rank spends inside collectives, for
// `axon-bench train`: the share of a training step spent waiting for communication, measured
// without touching the trainer. Not thread-safe (the trainer calls its communicator from one
// thread).
//
// Two sums: `tensor_seconds`, the Tensor collectives (the gradient all-reduce, blocking or
// through a Work's wait()/test(), broadcasts of parameters, reduce_scatter/allgather of ZeRO), and
// `span_seconds`, the span collectives (the trainer's small metric and agreement all-reduces).
// A blocking call counts whole; a non-blocking one counts its launch plus the time in wait() and
// test(): what the rank spends not computing, which is what bucketed overlap shrinks.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <utility>

#include "axon/communicator.h"

namespace axon::bench {

class TimingCommunicator final : public Communicator {
 public:
  // `inner` must outlive this object.
  explicit TimingCommunicator(Communicator& inner) : inner_(inner) {}

  double tensor_seconds = 0.0;  // Tensor collectives (launch, blocking call, wait, test)
  double span_seconds = 0.0;    // span collectives and barriers
  long long tensor_calls = 0;   // Tensor collectives started
  void reset() { tensor_seconds = span_seconds = 0.0, tensor_calls = 0; }

  std::string backend() const override { return inner_.backend(); }
  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }

  void allreduce(std::span<float> data, ReduceOp op) override { timed(span_seconds, [&] { inner_.allreduce(data, op); }); }
  void allreduce(std::span<double> data, ReduceOp op) override { timed(span_seconds, [&] { inner_.allreduce(data, op); }); }
  void broadcast(std::span<float> data, int root) override { timed(span_seconds, [&] { inner_.broadcast(data, root); }); }
  void broadcast(std::span<std::byte> data, int root) override { timed(span_seconds, [&] { inner_.broadcast(data, root); }); }
  void barrier() override { timed(span_seconds, [&] { inner_.barrier(); }); }

  void allreduce(Tensor& data, ReduceOp op) override {
    ++tensor_calls;
    timed(tensor_seconds, [&] { inner_.allreduce(data, op); });
  }
  void broadcast(Tensor& data, int root) override {
    ++tensor_calls;
    timed(tensor_seconds, [&] { inner_.broadcast(data, root); });
  }
  std::shared_ptr<Work> allreduce_async(Tensor& data, ReduceOp op) override {
    return launch([&] { return inner_.allreduce_async(data, op); });
  }
  std::shared_ptr<Work> broadcast_async(Tensor& data, int root) override {
    return launch([&] { return inner_.broadcast_async(data, root); });
  }
  std::shared_ptr<Work> reduce_scatter_async(const Tensor& input, Tensor& output, ReduceOp op) override {
    return launch([&] { return inner_.reduce_scatter_async(input, output, op); });
  }
  std::shared_ptr<Work> allgather_async(const Tensor& input, Tensor& output) override {
    return launch([&] { return inner_.allgather_async(input, output); });
  }
  void send(const Tensor& data, int dst, int tag) override { timed(tensor_seconds, [&] { inner_.send(data, dst, tag); }); }
  void recv(Tensor& data, int src, int tag) override { timed(tensor_seconds, [&] { inner_.recv(data, src, tag); }); }

 private:
  template <class F>
  static void timed(double& sum, F&& f) {
    const auto start = std::chrono::steady_clock::now();
    struct Add {  // counted even when f throws
      double& sum;
      std::chrono::steady_clock::time_point start;
      ~Add() { sum += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); }
    } add{sum, start};
    f();
  }

  class TimedWork final : public Work {
   public:
    TimedWork(std::shared_ptr<Work> inner, double& sum) : inner_(std::move(inner)), sum_(sum) {}
    void wait() override { timed(sum_, [&] { inner_->wait(); }); }
    bool test() override {
      bool done = false;
      timed(sum_, [&] { done = inner_->test(); });
      return done;
    }

   private:
    std::shared_ptr<Work> inner_;
    double& sum_;  // the communicator's; a Work must not outlive it
  };

  template <class F>
  std::shared_ptr<Work> launch(F&& f) {
    ++tensor_calls;
    std::shared_ptr<Work> work;
    timed(tensor_seconds, [&] { work = f(); });
    return std::make_shared<TimedWork>(std::move(work), tensor_seconds);
  }

  Communicator& inner_;
};

}  // namespace axon::bench
