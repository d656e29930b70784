// The MPI backend over MPI_COMM_WORLD.
#include <mpi.h>

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "axon/agreement.h"
#include "axon/communicator.h"
#include "axon/heartbeat.h"
#include "axon/rank_env.h"

namespace axon {

namespace {

// MPI stays initialized until the process exits, and how it ends depends on how the process
// exits: a success finalizes; a failure (exit status != 0, e.g. main returning 1 after catching
// an error) aborts the whole job, so the other ranks do not wait in a collective for this one.
// glibc's on_exit() hands us the exit status, which atexit() does not. A failure that every rank
// shares (mark_failure_collective) finalizes as well.
void finish_mpi(int status, void*) {
  heartbeat::exiting(status);  // for axonrun's watchdog, even when the program finalized MPI itself
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  if (status == 0 || failure_is_collective()) {
    // Every rank is exiting here too (a failure they all decided alike): a clean finalize keeps
    // each rank's message and exit status, where an abort would kill ranks mid-sentence.
    MPI_Finalize();
  } else {
    int rank = -1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    std::fprintf(stderr, "axon: rank %d is exiting with status %d; stopping the whole job\n", rank, status);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, status);
  }
}

void ensure_mpi_initialized() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) return;
  int provided = 0;
  // SERIALIZED: a communication thread may issue collectives (bucketed all-reduce, later; it
  // must check `provided` then).
  if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS)
    throw CommError("mpi: MPI_Init_thread failed");
  on_exit(finish_mpi, nullptr);
}

MPI_Op to_mpi(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return MPI_SUM;
    case ReduceOp::max: return MPI_MAX;
    case ReduceOp::min: return MPI_MIN;
  }
  return MPI_SUM;
}

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator() {
    ensure_mpi_initialized();
    // Our own communicator, with errors returned (not fatal) so we can say what failed.
    check(MPI_Comm_dup(MPI_COMM_WORLD, &comm_), "MPI_Comm_dup", 0);
    check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler", 0);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm_);
  }

  std::string backend() const override { return "mpi"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void allreduce(std::span<float> data, ReduceOp op) override {
    check(MPI_Allreduce(MPI_IN_PLACE, data.data(), count(data.size(), "allreduce"), MPI_FLOAT, to_mpi(op), comm_),
          "allreduce(float)", data.size());
  }
  void allreduce(std::span<double> data, ReduceOp op) override {
    check(MPI_Allreduce(MPI_IN_PLACE, data.data(), count(data.size(), "allreduce"), MPI_DOUBLE, to_mpi(op), comm_),
          "allreduce(double)", data.size());
  }
  void broadcast(std::span<float> data, int root) override {
    check_root(root);
    check(MPI_Bcast(data.data(), count(data.size(), "broadcast"), MPI_FLOAT, root, comm_), "broadcast(float)", data.size());
  }
  void broadcast(std::span<std::byte> data, int root) override {
    check_root(root);
    check(MPI_Bcast(data.data(), count(data.size(), "broadcast"), MPI_BYTE, root, comm_), "broadcast(bytes)", data.size());
  }
  void barrier() override { check(MPI_Barrier(comm_), "barrier", 0); }

 private:
  void check(int code, const char* what, size_t n) const {
    if (code == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(code, text, &len);
    throw CommError(fmt::format("mpi {} of {} elements failed on rank {} of {}: {}", what, n, rank_, size_,
                                std::string(text, static_cast<size_t>(len))));
  }
  int count(size_t n, const char* what) const {
    // Larger buffers would need chunking; nobody reduces 8 GiB in one call yet.
    if (n > static_cast<size_t>(std::numeric_limits<int>::max()))
      throw CommError(fmt::format("mpi {}: {} elements exceed MPI's int count on rank {}", what, n, rank_));
    return static_cast<int>(n);
  }
  void check_root(int root) const {
    if (root < 0 || root >= size_)
      throw CommError(fmt::format("mpi broadcast: root {} is not a rank of this world of {} (on rank {})", root, size_, rank_));
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator() {
  // The launcher's variables must describe the world MPI started: torchrun-style variables alone
  // (RANK, WORLD_SIZE) give an MPI singleton, which would train alone while believing otherwise.
  // Read before MPI starts: a singleton exports PMIX_RANK=0 for itself.
  const RankEnvironment env = rank_environment();
  std::unique_ptr<Communicator> comm = std::make_unique<MpiCommunicator>();
  if (env.launched() && (env.rank != comm->rank() || env.world_size != comm->size())) {
    throw CommError(fmt::format(
        "mpi: the {} launcher variables say this is rank {} of {}, but MPI started rank {} of {}: Axon's ranks meet "
        "through MPI, so start the job with axonrun, mpirun or srun{}",
        env.source, env.rank, env.world_size, comm->rank(), comm->size(),
#ifdef AXON_HAS_TCP_STORE
        env.source == "torchrun" ? ", or set MASTER_ADDR and MASTER_PORT to meet through Axon's TCP store (no MPI)" : ""
#else
        env.source == "torchrun" ? " (this Axon was built without Boost.Asio, so it has no TCP store for MASTER_ADDR and "
                                   "MASTER_PORT)"
                                 : ""
#endif
        ));
  }
  // The debug checks add a collective before every collective, so they decide the sequence of
  // collectives themselves: all ranks must have them or none. One small all-reduce finds out.
  const bool debug = distributed_debug_enabled();
  std::vector<double> flags(static_cast<size_t>(comm->size()), 0.0);
  flags[static_cast<size_t>(comm->rank())] = debug ? 1.0 : 0.0;
  comm->allreduce(std::span<double>(flags), ReduceOp::sum);
  std::string with, without;  // "0, 2" and "1"
  for (size_t r = 0; r < flags.size(); ++r) {
    std::string& list = flags[r] != 0.0 ? with : without;
    list += (list.empty() ? "" : ", ") + std::to_string(r);
  }
  if (!with.empty() && !without.empty()) {
    mark_failure_collective();  // every rank throws here alike
    throw DisagreementError(fmt::format(
        "mpi: AXON_DISTRIBUTED_DEBUG=1 is set on rank(s) {} but not on rank(s) {} (seen on rank {}); set it for the "
        "whole job (mpirun -x AXON_DISTRIBUTED_DEBUG=1, or export it before axonrun)",
        with, without, comm->rank()));
  }
  return with_heartbeat(debug ? with_collective_checks(std::move(comm)) : std::move(comm));
}

}  // namespace axon
