// Where this process sits in a job, read from the launcher's environment variables before MPI
// starts: rank, world size, local rank, local world size and node. Standard library only, so that
// axonrun (which depends on nothing else in Axon) compiles it in as well.
//
// Sources, in order of precedence (the first one present decides; the others are ignored, since
// a launcher started inside another one inherits stale values, e.g. SLURM_PROCID=0 on every rank
// of an mpirun inside an sbatch script):
//
//   1. Open MPI (mpirun, axonrun)  OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE,
//                                  OMPI_COMM_WORLD_LOCAL_RANK, OMPI_COMM_WORLD_LOCAL_SIZE
//                                  (no node index: node_rank and num_nodes stay unknown)
//   2. Slurm job step (srun)       SLURM_PROCID, SLURM_STEP_NUM_TASKS (else SLURM_NTASKS),
//                                  SLURM_LOCALID, SLURM_STEP_TASKS_PER_NODE (else
//                                  SLURM_TASKS_PER_NODE, "2(x3),1" form) at SLURM_NODEID,
//                                  SLURM_NODEID, SLURM_STEP_NUM_NODES (else SLURM_NNODES).
//                                  Only inside a step (SLURM_STEP_ID or SLURM_STEPID set, and not
//                                  the batch script's own step): a batch script is one process.
//   3. MPICH / Hydra (PMI-1/2)     PMI_RANK, PMI_SIZE, MPI_LOCALRANKID, MPI_LOCALNRANKS
//   4. torchrun                    RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK
//                                  (node), MASTER_ADDR, MASTER_PORT
//   5. none                        a single process: rank 0 of 1
//
// PMIx (PMIX_RANK) keeps the sizes in its server, not in the environment: it is never a source by
// itself, but when set it must agree with the chosen source's rank (Open MPI and srun --mpi=pmix
// set both). A PMIX_RANK without any source of sizes is an error.
//
// Parsing is strict: digits only ("1", not " 1", "+1", "1x" or "-1"), at most 10^9. Every error
// is a RankEnvironmentError naming the variable(s) and their values.
#pragma once

#include <functional>
#include <optional>
#include <stdexcept>
#include <string>

namespace axon {

class RankEnvironmentError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct RankEnvironment {
  // "openmpi", "slurm", "mpich", "torchrun", or "none" (a single process).
  std::string source = "none";
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;        // index among the ranks on this node; picks the GPU
  int local_world_size = 1;  // ranks on this node; divides the CPUs among them
  std::optional<int> node_rank;  // this node's index in the job, where the launcher says
  std::optional<int> num_nodes;
  std::string master_addr;       // torchrun-style rendezvous address; "" when not set
  std::optional<int> master_port;

  // True when a launcher started this process as one rank of a job (source != "none").
  bool launched() const { return source != "none"; }
};

// Reads a variable's value: nullptr when unset. The default reads the process environment.
using EnvLookup = std::function<const char*(const char* name)>;

// The rank environment of this process (see the order above). Throws RankEnvironmentError on a
// malformed value (naming the variable and the value), a missing companion variable (RANK without
// WORLD_SIZE), or inconsistent values (OMPI_COMM_WORLD_RANK=2 with OMPI_COMM_WORLD_SIZE=2,
// PMIX_RANK differing from the chosen rank, a local rank outside the local world...).
RankEnvironment rank_environment();
RankEnvironment rank_environment(const EnvLookup& getenv);

// Strict parse of a non-negative integer variable: nullopt when unset or empty; throws
// RankEnvironmentError naming `name` and the value when it is not plain decimal digits or exceeds
// 10^9.
std::optional<int> parse_index_variable(const char* name, const char* value);

// The number of tasks on node `node` from a Slurm tasks-per-node list such as "2(x3),1" (nodes
// 0-2 run 2 tasks, node 3 runs 1). Throws RankEnvironmentError naming `name` when the list is
// malformed or has no entry for `node`.
int slurm_tasks_on_node(const char* name, const std::string& list, int node);

}  // namespace axon
