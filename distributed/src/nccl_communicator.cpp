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

namespace axon {

namespace {

ncclRedOp_t to_nccl(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return ncclSum;
    case ReduceOp::max: return ncclMax;
    case ReduceOp::min: return ncclMin;
  }
  return ncclSum;
}

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
  }
  ~NcclCommunicator() override {
    if (comm_) ncclCommDestroy(comm_);
  }

  std::string backend() const override { return "nccl"; }
  int rank() const override { return bootstrap_.rank(); }
  int size() const override { return bootstrap_.size(); }

  void allreduce(std::span<float> data, ReduceOp op) override { bootstrap_.allreduce(data, op); }
  void allreduce(std::span<double> data, ReduceOp op) override { bootstrap_.allreduce(data, op); }
  void broadcast(std::span<float> data, int root) override { bootstrap_.broadcast(data, root); }
  void broadcast(std::span<std::byte> data, int root) override { bootstrap_.broadcast(data, root); }
  void barrier() override { bootstrap_.barrier(); }

  void allreduce(Tensor& data, ReduceOp op) override {
    if (!data.device().is_cuda()) return Communicator::allreduce(data, op);
    check_device(data, "allreduce");
    check(ncclAllReduce(data.raw_data(), data.raw_data(), static_cast<size_t>(data.numel()), nccl_type(data), to_nccl(op),
                        comm_, stream_),
          "ncclAllReduce", static_cast<size_t>(data.numel()));
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

  Communicator& bootstrap_;
  Device device_;
  cudaStream_t stream_ = nullptr;
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
