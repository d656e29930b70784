// The communicator: the one small interface every collective goes through (like PyTorch's
// ProcessGroup). Backends: "local" (a single process, collectives are no-ops), "mpi", and "nccl"
// (GPU tensors through NCCL; host buffers through the MPI communicator it was bootstrapped from).
//
// Every failure throws axon::CommError naming the operation, this rank, the world size and the
// element count, so a broken job says which rank and which collective went wrong.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>

#include "axon/rank_env.h"
#include "axon/tensor.h"

namespace axon {

// avg is sum divided by the world size (NCCL's ncclAvg; MPI has none, so the MPI backend sums and
// scales once on the tensor's device). On the span API it is only accepted for floating types.
enum class ReduceOp { sum, max, min, avg };
const char* reduce_op_name(ReduceOp op);

class CommError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A collective in flight, returned by the *_async calls (PyTorch c10d's Work). The tensors it
// reads and writes must stay alive and untouched until wait() returns; the handle keeps their
// storage alive itself. Ranks must issue collectives in the same order (as with MPI and NCCL).
class Work {
 public:
  virtual ~Work() = default;
  // Blocks until the collective is complete and its output may be read on this thread (for GPU
  // tensors: until the device's compute stream is ordered after it, without a host wait). Rethrows
  // the collective's failure as CommError naming the op, rank, world size and element count.
  // Calling it again returns at once (or rethrows the same error).
  virtual void wait() = 0;
  // Non-blocking: true once the collective is complete (wait() then returns at once). Also drives
  // progress: an MPI backend without an asynchronous progress thread only advances a
  // non-blocking collective inside MPI calls, so a reducer calls test() on its buckets as
  // backward runs. Throws like wait().
  virtual bool test() = 0;
};

// A Work that is already complete (what backends without asynchrony return).
std::shared_ptr<Work> completed_work();

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual std::string backend() const = 0;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // In-place all-reduce: afterwards every rank holds the reduction over all ranks.
  virtual void allreduce(std::span<float> data, ReduceOp op = ReduceOp::sum) = 0;
  virtual void allreduce(std::span<double> data, ReduceOp op = ReduceOp::sum) = 0;
  // Every rank receives root's data.
  virtual void broadcast(std::span<float> data, int root) = 0;
  virtual void broadcast(std::span<std::byte> data, int root) = 0;
  virtual void barrier() = 0;

  // ---- Tensor collectives ----
  // On contiguous f32, f64 or bf16 tensors on any device. The defaults run host tensors through
  // the span versions and stage GPU tensors through host memory (a CUDA-aware MPI is not
  // assumed); bf16 is reduced in f32 and rounded once. The MPI backend runs host tensors through
  // MPI's non-blocking collectives; the NCCL backend runs GPU tensors on the GPU. Every call
  // throws CommError naming the op, this rank, the world size, and the dtype, device or sizes it
  // cannot handle. Each blocking form is its *_async form followed by wait(), unless a backend
  // has a faster blocking call (MPI: the blocking MPI collectives).

  // In place: afterwards every rank holds the reduction over all ranks.
  virtual void allreduce(Tensor& data, ReduceOp op = ReduceOp::sum);
  virtual std::shared_ptr<Work> allreduce_async(Tensor& data, ReduceOp op = ReduceOp::sum);
  // Every rank receives root's data.
  virtual void broadcast(Tensor& data, int root);
  virtual std::shared_ptr<Work> broadcast_async(Tensor& data, int root);
  // input {size() * n} (same dtype and device as output {n}), split into size() blocks of n:
  // rank r's output is the reduction over ranks of block r (MPI_Reduce_scatter_block,
  // ncclReduceScatter). Callers pad their buffers to a multiple of the world size.
  virtual void reduce_scatter(const Tensor& input, Tensor& output, ReduceOp op = ReduceOp::sum);
  virtual std::shared_ptr<Work> reduce_scatter_async(const Tensor& input, Tensor& output, ReduceOp op = ReduceOp::sum);
  // input {n} from every rank, concatenated in rank order into output {size() * n}
  // (MPI_Allgather, ncclAllGather).
  virtual void allgather(const Tensor& input, Tensor& output);
  virtual std::shared_ptr<Work> allgather_async(const Tensor& input, Tensor& output);
  // Point to point, blocking: `data` to rank `dst`; into `data` from rank `src` (same element
  // count and dtype on both sides; a tag tells apart messages between the same two ranks).
  // Throws CommError naming the peer when it is not a rank of this world or is this rank.
  virtual void send(const Tensor& data, int dst, int tag = 0);
  virtual void recv(Tensor& data, int src, int tag = 0);

  bool is_root() const { return rank() == 0; }
};

// A world of one: rank 0 of size 1.
std::unique_ptr<Communicator> make_local_communicator();
// MPI_COMM_WORLD. Initializes MPI on first use and finalizes it when the last MPI communicator
// goes away. Throws CommError when Axon was built without MPI.
std::unique_ptr<Communicator> make_mpi_communicator();
// MPI when the process was started by mpirun/srun (rank variables are set), local otherwise.
// Both MPI factories return a communicator wrapped by with_collective_checks when
// distributed_debug_enabled().
std::unique_ptr<Communicator> make_communicator();
// NCCL over the GPU `device` (cuda:k), bootstrapped through `bootstrap` (its rank 0 makes the
// ncclUniqueId and broadcasts it; a local communicator gives a world of one). Host collectives
// are forwarded to `bootstrap`, which must outlive the result. Throws CommError naming the rank
// and device when NCCL is missing from this build or cannot start.
std::unique_ptr<Communicator> make_nccl_communicator(Communicator& bootstrap, Device device);
// The NCCL version linked in ("2.27.3"); "" when built without NCCL.
std::string nccl_version();


// True when the environment variable AXON_DISTRIBUTED_DEBUG is "1" (like PyTorch's
// TORCH_DISTRIBUTED_DEBUG=DETAIL). Set it on every rank (mpirun passes its environment on).
bool distributed_debug_enabled();
// Wraps `inner` so that before each collective the ranks compare what they are about to call:
// the operation (allreduce, broadcast, barrier), the reduce op or root, the element count and the
// dtype, with one extra 8-double all-reduce (min and max at once). When any differ, every rank
// throws CommError naming the operation, each rank's call and this rank, e.g.
//   "collective mismatch at call 3: rank 0 calls allreduce(float, sum) of 4 elements, rank 1
//    calls allreduce(float, sum) of 5 elements"
// and the real collective is not made, so no rank's buffer is written past its end. Costs a
// latency-bound all-reduce per collective: for debugging, not for production runs.
std::unique_ptr<Communicator> with_collective_checks(std::unique_ptr<Communicator> inner);
// Wraps `inner` so that each collective is recorded in this rank's heartbeat file while it runs
// (axon/heartbeat.h), when AXON_HEARTBEAT_DIR is set (axonrun sets it), and so that a rank that
// waits in one collective longer than AXON_COLLECTIVE_TIMEOUT seconds exits (status 124); returns
// `inner` itself when neither is set. Costs two small pwrite calls per collective. The MPI and
// NCCL factories apply it. Throws CommError naming AXON_COLLECTIVE_TIMEOUT when it is malformed.
std::unique_ptr<Communicator> with_heartbeat(std::unique_ptr<Communicator> inner);
// Whether a launcher started this process as a rank of a job: rank_environment().launched()
// (Open MPI, a Slurm job step, MPICH/Hydra or torchrun variables). Throws RankEnvironmentError
// when those variables are malformed or inconsistent.
bool launched_with_ranks();

// A program that is about to exit with a failure that every rank hit at the same point (an error
// decided from values all ranks share, such as axon::DisagreementError or a NonFiniteError)
// calls this first: MPI is then finalized at exit instead of aborting the job, so every rank's
// message is printed and the job's exit status is the ranks' own. Never call it for a failure
// that other ranks may not share: they would wait for this rank in their next collective.
void mark_failure_collective();
bool failure_is_collective();

// How many ranks share this node: rank_environment().local_world_size (1 for a single process).
// Throws RankEnvironmentError naming the variable when the launcher's variables are malformed or
// inconsistent (axon/rank_env.h has the variables and their order of precedence).
int local_world_size();
// This rank's index among the ranks on its node: rank_environment().local_rank (0 for a single
// process). Picks the GPU: local_rank % device_count. Throws like local_world_size().
int local_rank();

// This process's rank as the launcher announced it (OMPI_COMM_WORLD_RANK, PMIX_RANK, PMI_RANK,
// SLURM_PROCID, torchrun's RANK, first one set), readable before MPI starts, so a program can print what is the
// same on every rank (usage errors, --help) from rank 0 only. Never throws: 0 when no launcher
// set one, or when the value is not a plain non-negative decimal number.
int launcher_rank();

}  // namespace axon
