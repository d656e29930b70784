#include <fmt/format.h>

#include <atomic>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "axon/communicator.h"
#include "comm_internal.h"
#include "axon/rank_env.h"
#include "axon/tcp_store.h"

namespace axon {

namespace {

class LocalCommunicator final : public Communicator {
 public:
  std::string backend() const override { return "local"; }
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void allreduce(std::span<float>, ReduceOp) override {}
  void allreduce(std::span<double>, ReduceOp) override {}
  void broadcast(std::span<float>, int root) override { check_root(root); }
  void broadcast(std::span<std::byte>, int root) override { check_root(root); }
  void barrier() override {}

 private:
  static void check_root(int root) {
    if (root != 0) throw CommError("local broadcast: root " + std::to_string(root) + " does not exist in a world of 1");
  }
};

}  // namespace

namespace {
std::atomic<bool> collective_failure{false};
}

void mark_failure_collective() { collective_failure = true; }
bool failure_is_collective() { return collective_failure; }

std::unique_ptr<Communicator> make_local_communicator() { return std::make_unique<LocalCommunicator>(); }

namespace detail {
void check_collective_tensor(const char* op, const Tensor& t, const Communicator& comm) {
  if (!is_floating(t.dtype()))
    throw CommError(fmt::format("{} on rank {} of {}: dtype {} is not supported (f32, f64 or bf16)", op, comm.rank(),
                                comm.size(), dtype_name(t.dtype())));
}
}  // namespace detail

namespace {
using detail::check_collective_tensor;

// Host f32 or f64 memory holding t's values: t itself, or a converted host copy.
Tensor host_staging(const Tensor& t) {
  Tensor host = t.detach().to(Device::cpu());
  return host.dtype() == DType::bf16 ? host.to(DType::f32) : host;
}

void copy_back(Tensor& t, const Tensor& host) {
  if (host.raw_data() == t.raw_data()) return;
  t.copy_from(host.to(t.dtype()).to(t.device()));
}

}  // namespace

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return "sum";
    case ReduceOp::max: return "max";
    case ReduceOp::min: return "min";
    case ReduceOp::avg: return "avg";
  }
  return "?";
}

namespace {
class CompletedWork final : public Work {
 public:
  void wait() override {}
  bool test() override { return true; }
};
}  // namespace

std::shared_ptr<Work> completed_work() {
  static const std::shared_ptr<Work> done = std::make_shared<CompletedWork>();
  return done;
}

void Communicator::allreduce(Tensor& data, ReduceOp op) {
  check_collective_tensor("allreduce", data, *this);
  if (size() == 1 || data.numel() == 0) return;
  Tensor host = host_staging(data);
  const size_t n = static_cast<size_t>(host.numel());
  if (host.dtype() == DType::f64) allreduce(std::span<double>(host.data_as<double>(), n), op);
  else allreduce(std::span<float>(host.data_as<float>(), n), op);
  copy_back(data, host);
}

std::shared_ptr<Work> Communicator::allreduce_async(Tensor& data, ReduceOp op) {
  allreduce(data, op);
  return completed_work();
}

void Communicator::broadcast(Tensor& data, int root) {
  check_collective_tensor("broadcast", data, *this);
  if (size() == 1 || data.numel() == 0) return;
  Tensor host = data.detach().to(Device::cpu());
  broadcast(std::span<std::byte>(static_cast<std::byte*>(host.raw_data()), host.nbytes()), root);
  copy_back(data, host);
}

std::shared_ptr<Work> Communicator::broadcast_async(Tensor& data, int root) {
  broadcast(data, root);
  return completed_work();
}

void Communicator::reduce_scatter(const Tensor& input, Tensor& output, ReduceOp op) {
  reduce_scatter_async(input, output, op)->wait();
}

void Communicator::allgather(const Tensor& input, Tensor& output) { allgather_async(input, output)->wait(); }

void detail::check_scatter_shapes(const char* op, const Tensor& whole, const Tensor& block, const Communicator& comm) {
  check_collective_tensor(op, whole, comm);
  if (whole.dtype() != block.dtype() || whole.device() != block.device())
    throw CommError(fmt::format("{} on rank {} of {}: the buffers differ ({} on {} and {} on {})", op, comm.rank(),
                                comm.size(), dtype_name(whole.dtype()), whole.device().str(), dtype_name(block.dtype()),
                                block.device().str()));
  if (whole.numel() != block.numel() * comm.size())
    throw CommError(fmt::format("{} on rank {} of {}: the whole buffer has {} elements but must have world size x block "
                                "= {} x {} = {}",
                                op, comm.rank(), comm.size(), whole.numel(), comm.size(), block.numel(),
                                block.numel() * comm.size()));
}

// The defaults below build reduce_scatter and allgather from one all-reduce of the whole buffer:
// correct on any backend (adding zeros is exact), at twice the traffic of the real collectives,
// which the MPI and NCCL backends provide.
std::shared_ptr<Work> Communicator::reduce_scatter_async(const Tensor& input, Tensor& output, ReduceOp op) {
  detail::check_scatter_shapes("reduce_scatter", input, output, *this);
  Tensor whole = Tensor::empty(input.shape(), TensorOptions{input.dtype(), input.device()});
  whole.copy_from(input);
  allreduce(whole, op);
  const int64_t n = output.numel();
  output.copy_from(Tensor::view_of(whole.storage(), whole.offset() + static_cast<size_t>(n * rank()), {n}, whole.dtype()));
  return completed_work();
}

std::shared_ptr<Work> Communicator::allgather_async(const Tensor& input, Tensor& output) {
  detail::check_scatter_shapes("allgather", output, input, *this);
  Tensor whole = Tensor::zeros(output.shape(), TensorOptions{output.dtype(), output.device()});
  const int64_t n = input.numel();
  Tensor::view_of(whole.storage(), whole.offset() + static_cast<size_t>(n * rank()), {n}, whole.dtype()).copy_from(input);
  allreduce(whole, ReduceOp::sum);
  output.copy_from(whole);
  return completed_work();
}

void detail::check_peer(const char* op, int peer, const Communicator& comm) {
  if (peer < 0 || peer >= comm.size() || peer == comm.rank())
    throw CommError(fmt::format("{} on rank {} of {}: peer {} is not another rank of this world", op, comm.rank(),
                                comm.size(), peer));
}

void Communicator::send(const Tensor& data, int dst, int) {
  detail::check_peer("send", dst, *this);
  throw CommError(fmt::format("send on rank {}: the {} backend has no point-to-point messages (size {})", rank(), backend(),
                              data.numel()));
}

void Communicator::recv(Tensor& data, int src, int) {
  detail::check_peer("recv", src, *this);
  throw CommError(fmt::format("recv on rank {}: the {} backend has no point-to-point messages (size {})", rank(), backend(),
                              data.numel()));
}

bool launched_with_ranks() { return rank_environment().launched(); }

int local_rank() { return rank_environment().local_rank; }

int local_world_size() { return rank_environment().local_world_size; }

int launcher_rank() {
  // Never throws: it only decides which rank prints what is the same everywhere. The first rank
  // variable set decides; a malformed one reads as rank 0 (a wrong rank 0 prints twice).
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID", "RANK"}) {
    try {
      if (std::optional<int> n = parse_index_variable(name, std::getenv(name))) return *n;
    } catch (const RankEnvironmentError&) {
      return 0;
    }
  }
  return 0;
}

std::unique_ptr<Communicator> make_communicator() {
  if (!launched_with_ranks()) return make_local_communicator();
#ifdef AXON_HAS_TCP_STORE
  // torchrun-style variables with a rendezvous address, and no MPI launcher's: the ranks meet
  // through the TCP store on MASTER_ADDR:MASTER_PORT (axon/tcp_store.h).
  const RankEnvironment env = rank_environment();
  if (env.source == "torchrun" && !env.master_addr.empty() && env.master_port) return make_tcp_communicator();
#endif
  return make_mpi_communicator();
}

#ifndef AXON_HAS_NCCL
std::unique_ptr<Communicator> make_nccl_communicator(Communicator& bootstrap, Device device) {
  throw CommError(fmt::format("nccl on rank {} ({}): this Axon was built without NCCL (it needs CUDA and NCCL at build time)",
                              bootstrap.rank(), device.str()));
}
std::string nccl_version() { return ""; }
#endif

#ifndef AXON_HAS_TCP_STORE
std::unique_ptr<Communicator> make_tcp_communicator() {
  throw CommError("tcp: this Axon was built without Boost.Asio (apt-get install libboost-dev), so it has no TCP store "
                  "for a rendezvous through MASTER_ADDR and MASTER_PORT; start the job with axonrun, mpirun or srun");
}
#endif

#ifndef AXON_HAS_MPI
std::unique_ptr<Communicator> make_mpi_communicator() {
  throw CommError("this Axon was built without MPI (AXON_WITH_MPI=OFF); rebuild with -DAXON_WITH_MPI=ON");
}
#endif

}  // namespace axon
