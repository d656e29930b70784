// AXON_DISTRIBUTED_DEBUG: a communicator that checks, before each collective, that every rank
// is about to make the same one.
#include <fmt/format.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include "axon/communicator.h"

namespace axon {

namespace {

enum class Op { allreduce = 1, broadcast = 2, barrier = 3, reduce_scatter = 4, allgather = 5 };
enum class Dtype { none = 0, f32 = 1, f64 = 2, bytes = 3, bf16 = 4 };

Dtype dtype_code(const Tensor& t) {
  switch (t.dtype()) {
    case DType::f32: return Dtype::f32;
    case DType::f64: return Dtype::f64;
    case DType::bf16: return Dtype::bf16;
    default: return Dtype::bytes;
  }
}

// What a rank is about to call. `arg` is the reduce op for all-reduce and the root for broadcast.
struct Call {
  Op op;
  int arg;
  size_t count;
  Dtype dtype;
};

std::string describe(double op, double arg, double count, double dtype) {
  static const char* const dtypes[] = {"", "float", "double", "bytes", "bf16"};
  static const char* const reduce_ops[] = {"sum", "max", "min", "avg"};
  const auto d = static_cast<int>(dtype);
  const char* dname = d >= 0 && d <= 4 ? dtypes[d] : "?";
  const auto a = static_cast<int>(arg);
  const char* rname = a >= 0 && a <= 3 ? reduce_ops[a] : "?";
  switch (static_cast<Op>(static_cast<int>(op))) {
    case Op::allreduce: return fmt::format("allreduce({}, {}) of {} elements", dname, rname, count);
    case Op::reduce_scatter: return fmt::format("reduce_scatter({}, {}) of {} elements", dname, rname, count);
    case Op::allgather: return fmt::format("allgather({}) of {} elements", dname, count);
    case Op::broadcast: return fmt::format("broadcast({}, root {}) of {} elements", dname, arg, count);
    case Op::barrier: return "barrier";
  }
  return fmt::format("unknown operation {}", op);
}

class CheckedCommunicator final : public Communicator {
 public:
  explicit CheckedCommunicator(std::unique_ptr<Communicator> inner) : inner_(std::move(inner)) {}

  std::string backend() const override { return inner_->backend(); }
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }

  void allreduce(std::span<float> data, ReduceOp op) override {
    check({Op::allreduce, static_cast<int>(op), data.size(), Dtype::f32});
    inner_->allreduce(data, op);
  }
  void allreduce(std::span<double> data, ReduceOp op) override {
    check({Op::allreduce, static_cast<int>(op), data.size(), Dtype::f64});
    inner_->allreduce(data, op);
  }
  void broadcast(std::span<float> data, int root) override {
    check({Op::broadcast, root, data.size(), Dtype::f32});
    inner_->broadcast(data, root);
  }
  void broadcast(std::span<std::byte> data, int root) override {
    check({Op::broadcast, root, data.size(), Dtype::bytes});
    inner_->broadcast(data, root);
  }
  void barrier() override {
    check({Op::barrier, 0, 0, Dtype::none});
    inner_->barrier();
  }
  void allreduce(Tensor& data, ReduceOp op) override {
    check({Op::allreduce, static_cast<int>(op), static_cast<size_t>(data.numel()), dtype_code(data)});
    inner_->allreduce(data, op);
  }
  std::shared_ptr<Work> allreduce_async(Tensor& data, ReduceOp op) override {
    check({Op::allreduce, static_cast<int>(op), static_cast<size_t>(data.numel()), dtype_code(data)});
    return inner_->allreduce_async(data, op);
  }
  void broadcast(Tensor& data, int root) override {
    check({Op::broadcast, root, static_cast<size_t>(data.numel()), dtype_code(data)});
    inner_->broadcast(data, root);
  }
  std::shared_ptr<Work> broadcast_async(Tensor& data, int root) override {
    check({Op::broadcast, root, static_cast<size_t>(data.numel()), dtype_code(data)});
    return inner_->broadcast_async(data, root);
  }
  void reduce_scatter(const Tensor& input, Tensor& output, ReduceOp op) override {
    check({Op::reduce_scatter, static_cast<int>(op), static_cast<size_t>(input.numel()), dtype_code(input)});
    inner_->reduce_scatter(input, output, op);
  }
  void allgather(const Tensor& input, Tensor& output) override {
    check({Op::allgather, 0, static_cast<size_t>(output.numel()), dtype_code(input)});
    inner_->allgather(input, output);
  }
  std::shared_ptr<Work> reduce_scatter_async(const Tensor& input, Tensor& output, ReduceOp op) override {
    check({Op::reduce_scatter, static_cast<int>(op), static_cast<size_t>(input.numel()), dtype_code(input)});
    return inner_->reduce_scatter_async(input, output, op);
  }
  std::shared_ptr<Work> allgather_async(const Tensor& input, Tensor& output) override {
    check({Op::allgather, 0, static_cast<size_t>(output.numel()), dtype_code(input)});
    return inner_->allgather_async(input, output);
  }
  // Point to point is not checked: its two sides make different calls by design.
  void send(const Tensor& data, int dst, int tag) override { inner_->send(data, dst, tag); }
  void recv(Tensor& data, int src, int tag) override { inner_->recv(data, src, tag); }

 private:
  void check(const Call& call) {
    ++calls_;
    // One all-reduce gives both the max and the min: the second half holds negated values.
    // Counts are exact in a double up to 2^53 elements.
    const double mine[4] = {static_cast<double>(call.op), static_cast<double>(call.arg),
                            static_cast<double>(call.count), static_cast<double>(call.dtype)};
    std::vector<double> extremes(8);
    for (int i = 0; i < 4; ++i) extremes[i] = mine[i], extremes[4 + i] = -mine[i];
    inner_->allreduce(extremes, ReduceOp::max);
    bool same = true;
    for (int i = 0; i < 4; ++i) same = same && extremes[i] == -extremes[4 + i];
    if (same) return;
    // Every rank saw the same extremes, so every rank makes this second all-reduce: each rank's
    // call, for the message.
    const size_t n = static_cast<size_t>(size()), me = static_cast<size_t>(rank());
    std::vector<double> table(n * 4, 0.0);
    std::memcpy(&table[me * 4], mine, sizeof(mine));
    inner_->allreduce(table, ReduceOp::sum);
    std::string calls;
    for (size_t r = 0; r < n && r < 16; ++r)
      calls += fmt::format("{}rank {} calls {}", r ? ", " : "", r,
                           describe(table[r * 4], table[r * 4 + 1], table[r * 4 + 2], table[r * 4 + 3]));
    if (n > 16) calls += fmt::format(", ... ({} ranks)", n);
    throw CommError(fmt::format(
        "collective mismatch (AXON_DISTRIBUTED_DEBUG) at call {} of rank {}: {}; the ranks are not making the same "
        "collectives, so the call was not made",
        calls_, me, calls));
  }

  std::unique_ptr<Communicator> inner_;
  uint64_t calls_ = 0;
};

}  // namespace

bool distributed_debug_enabled() {
  const char* v = std::getenv("AXON_DISTRIBUTED_DEBUG");
  return v && std::strcmp(v, "1") == 0;
}

std::unique_ptr<Communicator> with_collective_checks(std::unique_ptr<Communicator> inner) {
  return std::make_unique<CheckedCommunicator>(std::move(inner));
}

}  // namespace axon
