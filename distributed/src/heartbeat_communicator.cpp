// with_heartbeat: records each collective's start and end in this rank's heartbeat file (see
// axon/heartbeat.h), for axonrun's watchdog.
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include "axon/communicator.h"
#include "axon/heartbeat.h"

namespace axon {

namespace {

// Marks a collective from its call until it returns or throws.
class InCollective {
 public:
  explicit InCollective(const char* op) { heartbeat::collective_begin(op); }
  ~InCollective() { heartbeat::collective_end(); }
  InCollective(const InCollective&) = delete;
  InCollective& operator=(const InCollective&) = delete;
};

// Marks the wait for an asynchronous collective: a rank is stuck in it only while it waits.
class HeartbeatWork final : public Work {
 public:
  HeartbeatWork(std::shared_ptr<Work> inner, const char* op) : inner_(std::move(inner)), op_(op) {}
  void wait() override {
    InCollective mark(op_);
    inner_->wait();
  }
  bool test() override { return inner_->test(); }

 private:
  std::shared_ptr<Work> inner_;
  const char* op_;
};

class HeartbeatCommunicator final : public Communicator {
 public:
  explicit HeartbeatCommunicator(std::unique_ptr<Communicator> inner) : inner_(std::move(inner)) {}

  std::string backend() const override { return inner_->backend(); }
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }

  void allreduce(std::span<float> data, ReduceOp op) override {
    InCollective mark("allreduce");
    inner_->allreduce(data, op);
  }
  void allreduce(std::span<double> data, ReduceOp op) override {
    InCollective mark("allreduce");
    inner_->allreduce(data, op);
  }
  void broadcast(std::span<float> data, int root) override {
    InCollective mark("broadcast");
    inner_->broadcast(data, root);
  }
  void broadcast(std::span<std::byte> data, int root) override {
    InCollective mark("broadcast");
    inner_->broadcast(data, root);
  }
  void barrier() override {
    InCollective mark("barrier");
    inner_->barrier();
  }
  void allreduce(Tensor& data, ReduceOp op) override {
    InCollective mark("allreduce");
    inner_->allreduce(data, op);
  }
  void broadcast(Tensor& data, int root) override {
    InCollective mark("broadcast");
    inner_->broadcast(data, root);
  }
  void reduce_scatter(const Tensor& input, Tensor& output, ReduceOp op) override {
    InCollective mark("reduce_scatter");
    inner_->reduce_scatter(input, output, op);
  }
  void allgather(const Tensor& input, Tensor& output) override {
    InCollective mark("allgather");
    inner_->allgather(input, output);
  }
  std::shared_ptr<Work> allreduce_async(Tensor& data, ReduceOp op) override {
    return std::make_shared<HeartbeatWork>(inner_->allreduce_async(data, op), "allreduce");
  }
  std::shared_ptr<Work> broadcast_async(Tensor& data, int root) override {
    return std::make_shared<HeartbeatWork>(inner_->broadcast_async(data, root), "broadcast");
  }
  std::shared_ptr<Work> reduce_scatter_async(const Tensor& input, Tensor& output, ReduceOp op) override {
    return std::make_shared<HeartbeatWork>(inner_->reduce_scatter_async(input, output, op), "reduce_scatter");
  }
  std::shared_ptr<Work> allgather_async(const Tensor& input, Tensor& output) override {
    return std::make_shared<HeartbeatWork>(inner_->allgather_async(input, output), "allgather");
  }
  void send(const Tensor& data, int dst, int tag) override {
    InCollective mark("send");
    inner_->send(data, dst, tag);
  }
  void recv(Tensor& data, int src, int tag) override {
    InCollective mark("recv");
    inner_->recv(data, src, tag);
  }

 private:
  std::unique_ptr<Communicator> inner_;
};

}  // namespace

std::unique_ptr<Communicator> with_heartbeat(std::unique_ptr<Communicator> inner) {
  std::optional<double> timeout;
  try {
    timeout = heartbeat::collective_timeout_from_env();
  } catch (const std::invalid_argument& e) {
    throw CommError(std::string(e.what()) + " (on rank " + std::to_string(inner->rank()) + ")");
  }
  heartbeat::start(inner->rank(), timeout.value_or(0));
  const char* dir = std::getenv(heartbeat::kDirVariable);
  if ((!dir || !*dir) && !timeout) return inner;
  return std::make_unique<HeartbeatCommunicator>(std::move(inner));
}

}  // namespace axon
