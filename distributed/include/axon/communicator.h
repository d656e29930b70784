// The communicator: the one small interface every collective goes through (like PyTorch's
// ProcessGroup). Backends: "local" (a single process, collectives are no-ops) and "mpi".
// A NCCL backend for GPU buffers plugs in behind the same interface.
//
// Every failure throws axon::CommError naming the operation, this rank, the world size and the
// element count, so a broken job says which rank and which collective went wrong.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>

namespace axon {

enum class ReduceOp { sum, max, min };

class CommError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

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

  bool is_root() const { return rank() == 0; }
};

// A world of one: rank 0 of size 1.
std::unique_ptr<Communicator> make_local_communicator();
// MPI_COMM_WORLD. Initializes MPI on first use and finalizes it when the last MPI communicator
// goes away. Throws CommError when Axon was built without MPI.
std::unique_ptr<Communicator> make_mpi_communicator();
// MPI when the process was started by mpirun/srun (rank variables are set), local otherwise.
std::unique_ptr<Communicator> make_communicator();
// Whether this process was started by a launcher that runs several ranks.
bool launched_with_ranks();

// How many ranks share this machine (from the launcher's environment; 1 when unknown).
int local_world_size();

// This process's rank as the launcher announced it (OMPI_COMM_WORLD_RANK, PMIX_RANK, PMI_RANK,
// SLURM_PROCID, first one set), readable before MPI starts, so a program can print what is the
// same on every rank (usage errors, --help) from rank 0 only. 0 when no launcher set one, or
// when the value is not a plain non-negative decimal number.
int launcher_rank();

}  // namespace axon
