// The NCCL backend: GPU tensors are reduced by NCCL on the device's compute stream, so a
// collective is ordered after the kernels that produced its input and before those that read its
// output, with no host synchronisation. Host buffers (metrics, layout checks) go through the
// bootstrap communicator (MPI, or local for a world of one).
#include <cuda_runtime.h>
#include <fmt/format.h>
#include <nccl.h>

#include <cstring>
#include <vector>

#include "axon/communicator.h"
#include "axon/cuda.h"
#include "comm_internal.h"

namespace axon {

namespace {

ncclRedOp_t to_nccl(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return ncclSum;
    case ReduceOp::max: return ncclMax;
    case ReduceOp::min: return ncclMin;
    case ReduceOp::avg: return ncclAvg;
  }
  return ncclSum;
}

// A collective enqueued on the communicator's own stream: `done` is recorded after it there.
// wait() orders the compute stream after it without blocking the host (like c10d's
// WorkNCCL::wait); test() asks whether the GPU has finished it. The tensors stay alive until the
// compute stream is ordered after the collective, so the caching allocator cannot hand their
// memory to a kernel that would race with NCCL.
class NcclWork final : public Work {
 public:
  NcclWork(cudaEvent_t done, cudaStream_t compute, ncclComm_t comm, std::string what, std::vector<Tensor> keep)
      : done_(done), compute_(compute), comm_(comm), what_(std::move(what)), keep_(std::move(keep)) {}
  ~NcclWork() override {
    if (!waited_) cudaStreamWaitEvent(compute_, done_, 0);
    cudaEventDestroy(done_);
  }
  void wait() override {
    if (waited_) return;
    check_async_error();
    const cudaError_t e = cudaStreamWaitEvent(compute_, done_, 0);
    if (e != cudaSuccess) fail("wait", cudaGetErrorString(e));
    waited_ = true;
    keep_.clear();
  }
  bool test() override {
    const cudaError_t e = cudaEventQuery(done_);
    if (e == cudaErrorNotReady) {
      check_async_error();  // a dead peer never completes the event: NCCL reports it here
      return false;
    }
    if (e != cudaSuccess) fail("test", cudaGetErrorString(e));
    return true;
  }

 private:
  void check_async_error() const {
    ncclResult_t async = ncclSuccess;
    if (ncclCommGetAsyncError(comm_, &async) == ncclSuccess && async != ncclSuccess)
      fail("asynchronous error", ncclGetErrorString(async));
  }
  [[noreturn]] void fail(const char* where, const char* why) const {
    cudaGetLastError();
    throw CommError(fmt::format("{}: {}: {}", what_, where, why));
  }

  cudaEvent_t done_;
  cudaStream_t compute_;
  ncclComm_t comm_;
  std::string what_;  // "nccl allreduce(bf16, avg) of 1000 elements on rank 1 of 2 (cuda:1)"
  std::vector<Tensor> keep_;
  bool waited_ = false;
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(Communicator& bootstrap, Device device) : bootstrap_(bootstrap), device_(device) {
    if (!device.is_cuda())
      throw CommError(fmt::format("nccl on rank {}: needs a CUDA device, got {}", bootstrap.rank(), device.str()));
    stream_ = static_cast<cudaStream_t>(cuda::compute_stream(device.index));  // also validates the device
    ncclUniqueId id{};
    if (bootstrap.rank() == 0) check(ncclGetUniqueId(&id), "ncclGetUniqueId", 0);
    bootstrap.broadcast(std::span<std::byte>(reinterpret_cast<std::byte*>(&id), sizeof id), 0);
    // This rank's device stays current: restoring a previous device 0 would create a context there
    // on every rank.
    cudaSetDevice(device.index);
    const ncclResult_t result = ncclCommInitRank(&comm_, bootstrap.size(), id, bootstrap.rank());
    cudaGetLastError();
    check(result, "ncclCommInitRank", 0);
    // Asynchronous collectives run on a stream of their own, so they overlap the compute stream.
    if (cudaStreamCreateWithFlags(&comm_stream_, cudaStreamNonBlocking) != cudaSuccess) {
      cudaGetLastError();
      throw CommError(fmt::format("nccl on rank {} ({}): cannot create the communication stream", rank(), device_.str()));
    }
  }
  ~NcclCommunicator() override {
    // Work still queued on the communication stream must finish before its communicator goes.
    if (comm_stream_) cudaStreamSynchronize(comm_stream_);
    cudaGetLastError();
    if (comm_) ncclCommDestroy(comm_);
    if (comm_stream_) cudaStreamDestroy(comm_stream_);
  }

  std::string backend() const override { return "nccl"; }
  int rank() const override { return bootstrap_.rank(); }
  int size() const override { return bootstrap_.size(); }

  void allreduce(std::span<float> data, ReduceOp op) override { bootstrap_.allreduce(data, op); }
  void allreduce(std::span<double> data, ReduceOp op) override { bootstrap_.allreduce(data, op); }
  void broadcast(std::span<float> data, int root) override { bootstrap_.broadcast(data, root); }
  void broadcast(std::span<std::byte> data, int root) override { bootstrap_.broadcast(data, root); }
  void barrier() override { bootstrap_.barrier(); }
  // Point to point goes through the bootstrap communicator (MPI), staged through host memory:
  // it serves checkpoints (ZeRO shards to rank 0), not the training step.
  void send(const Tensor& data, int dst, int tag) override { bootstrap_.send(data.detach().to(Device::cpu()), dst, tag); }
  void recv(Tensor& data, int src, int tag) override {
    if (!data.device().is_cuda()) return bootstrap_.recv(data, src, tag);
    Tensor host = Tensor::empty(data.shape(), TensorOptions{data.dtype(), Device::cpu()});
    bootstrap_.recv(host, src, tag);
    data.copy_from(host.to(data.device()));
  }

  void allreduce(Tensor& data, ReduceOp op) override {
    if (!data.device().is_cuda()) return Communicator::allreduce(data, op);
    check_device(data, "allreduce");
    check(ncclAllReduce(data.raw_data(), data.raw_data(), static_cast<size_t>(data.numel()), nccl_type(data), to_nccl(op),
                        comm_, stream_),
          "ncclAllReduce", static_cast<size_t>(data.numel()));
  }

  std::shared_ptr<Work> allreduce_async(Tensor& data, ReduceOp op) override {
    if (!data.device().is_cuda()) return Communicator::allreduce_async(data, op);
    check_device(data, "allreduce");
    return on_comm_stream(describe("allreduce", data, static_cast<size_t>(data.numel()), reduce_op_name(op)), {data}, [&] {
      check(ncclAllReduce(data.raw_data(), data.raw_data(), static_cast<size_t>(data.numel()), nccl_type(data), to_nccl(op),
                          comm_, comm_stream_),
            "ncclAllReduce", static_cast<size_t>(data.numel()));
    });
  }
  std::shared_ptr<Work> broadcast_async(Tensor& data, int root) override {
    if (!data.device().is_cuda()) return Communicator::broadcast_async(data, root);
    broadcast(data, root);  // on the compute stream: already asynchronous to the host
    return completed_work();
  }
  std::shared_ptr<Work> reduce_scatter_async(const Tensor& input, Tensor& output, ReduceOp op) override {
    if (!input.device().is_cuda()) return Communicator::reduce_scatter_async(input, output, op);
    detail::check_scatter_shapes("reduce_scatter", input, output, *this);
    check_device(input, "reduce_scatter");
    const size_t n = static_cast<size_t>(output.numel());
    return on_comm_stream(describe("reduce_scatter", input, n, reduce_op_name(op)), {input, output}, [&] {
      check(ncclReduceScatter(input.raw_data(), output.raw_data(), n, nccl_type(input), to_nccl(op), comm_, comm_stream_),
            "ncclReduceScatter", n);
    });
  }
  std::shared_ptr<Work> allgather_async(const Tensor& input, Tensor& output) override {
    if (!input.device().is_cuda()) return Communicator::allgather_async(input, output);
    detail::check_scatter_shapes("allgather", output, input, *this);
    check_device(input, "allgather");
    const size_t n = static_cast<size_t>(input.numel());
    return on_comm_stream(describe("allgather", input, n, nullptr), {input, output}, [&] {
      check(ncclAllGather(input.raw_data(), output.raw_data(), n, nccl_type(input), comm_, comm_stream_), "ncclAllGather", n);
    });
  }

  void broadcast(Tensor& data, int root) override {
    if (!data.device().is_cuda()) return Communicator::broadcast(data, root);
    check_device(data, "broadcast");
    if (root < 0 || root >= size())
      throw CommError(fmt::format("nccl broadcast: root {} is not a rank of this world of {} (on rank {})", root, size(), rank()));
    check(ncclBroadcast(data.raw_data(), data.raw_data(), static_cast<size_t>(data.numel()), nccl_type(data), root, comm_,
                        stream_),
          "ncclBroadcast", static_cast<size_t>(data.numel()));
  }

 private:
  ncclDataType_t nccl_type(const Tensor& t) const {
    switch (t.dtype()) {
      case DType::f32: return ncclFloat32;
      case DType::f64: return ncclFloat64;
      case DType::bf16: return ncclBfloat16;
      default:
        throw CommError(fmt::format("nccl on rank {}: dtype {} is not supported (f32, f64 or bf16)", rank(),
                                    dtype_name(t.dtype())));
    }
  }

  void check_device(const Tensor& t, const char* op) const {
    if (t.device() != device_)
      throw CommError(fmt::format("nccl {} on rank {}: tensor on {} but this communicator uses {}", op, rank(),
                                  t.device().str(), device_.str()));
  }

  void check(ncclResult_t result, const char* what, size_t n) const {
    if (result == ncclSuccess) return;
    const char* last = ncclGetLastError(comm_);
    throw CommError(fmt::format("{} of {} elements failed on rank {} of {} ({}): {}{}{}", what, n, bootstrap_.rank(),
                                bootstrap_.size(), device_.str(), ncclGetErrorString(result),
                                last && *last ? ": " : "", last ? last : ""));
  }

  // Orders the communication stream after the compute stream's work so far (the inputs'
  // producers), enqueues `issue` there and records its completion event.
  template <typename Issue>
  std::shared_ptr<Work> on_comm_stream(std::string what, std::vector<Tensor> keep, Issue&& issue) {
    // Events are released on every path (a failed record or wait must not leak them).
    struct Event {
      cudaEvent_t e = nullptr;
      ~Event() {
        if (e) cudaEventDestroy(e);  // safe once recorded work is queued: freed when it completes
      }
    } ready, done;
    cuda_check(cudaEventCreateWithFlags(&ready.e, cudaEventDisableTiming), "cudaEventCreate");
    cuda_check(cudaEventRecord(ready.e, stream_), "cudaEventRecord");
    cuda_check(cudaStreamWaitEvent(comm_stream_, ready.e, 0), "cudaStreamWaitEvent");
    issue();
    cuda_check(cudaEventCreateWithFlags(&done.e, cudaEventDisableTiming), "cudaEventCreate");
    cuda_check(cudaEventRecord(done.e, comm_stream_), "cudaEventRecord");
    auto work = std::make_shared<NcclWork>(done.e, stream_, comm_, std::move(what), std::move(keep));
    done.e = nullptr;  // the work owns it now
    return work;
  }
  std::string describe(const char* op, const Tensor& t, size_t n, const char* reduce) const {
    return fmt::format("nccl {}({}{}{}) of {} elements on rank {} of {} ({})", op, dtype_name(t.dtype()), reduce ? ", " : "",
                       reduce ? reduce : "", n, rank(), size(), device_.str());
  }
  void cuda_check(cudaError_t e, const char* what) const {
    if (e == cudaSuccess) return;
    cudaGetLastError();
    throw CommError(fmt::format("nccl on rank {} of {} ({}): {} failed: {}", rank(), size(), device_.str(), what,
                                cudaGetErrorString(e)));
  }

  Communicator& bootstrap_;
  Device device_;
  cudaStream_t stream_ = nullptr;
  cudaStream_t comm_stream_ = nullptr;
  ncclComm_t comm_ = nullptr;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(Communicator& bootstrap, Device device) {
  return with_heartbeat(std::make_unique<NcclCommunicator>(bootstrap, device));
}

std::string nccl_version() {
  int version = 0;
  if (ncclGetVersion(&version) != ncclSuccess) return "";
  // NCCL_VERSION(X,Y,Z) = X*10000 + Y*100 + Z since 2.9.
  return fmt::format("{}.{}.{}", version / 10000, (version / 100) % 100, version % 100);
}

}  // namespace axon
