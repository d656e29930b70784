// The rank environment (see axon/rank_env.h). Standard library only: axonrun compiles it in.
#include "axon/rank_env.h"

#include <cstdlib>
#include <string_view>

namespace axon {

namespace {

constexpr long kMaxIndex = 1'000'000'000;

std::string shown(const char* name, const char* value) { return std::string(name) + "='" + value + "'"; }

// The variables of one source, read and checked.
class Reader {
 public:
  Reader(const EnvLookup& getenv, std::string source) : getenv_(getenv), source_(std::move(source)) {}

  const char* raw(const char* name) const {
    const char* v = getenv_(name);
    return v && *v ? v : nullptr;
  }
  std::optional<int> index(const char* name) const { return parse_index_variable(name, raw(name)); }
  // A variable the source cannot do without.
  int required(const char* name, const char* because) const {
    if (std::optional<int> n = index(name)) return *n;
    throw RankEnvironmentError(source_ + " launcher variables: " + because + " is set but " + name +
                               " is not; cannot tell this rank's place in the job");
  }
  // A count: at least 1.
  int count(const char* name, int value) const {
    if (value < 1) throw RankEnvironmentError(std::string(name) + "=" + std::to_string(value) + " (" + source_ + "): must be at least 1");
    return value;
  }

 private:
  const EnvLookup& getenv_;
  std::string source_;
};

void check_below(const char* index_name, int index, const char* size_name, int size, const std::string& source) {
  if (index >= size) {
    throw RankEnvironmentError(std::string(index_name) + "=" + std::to_string(index) + " is not below " + size_name + "=" +
                               std::to_string(size) + " (" + source + " launcher variables are inconsistent)");
  }
}

// The batch script of an sbatch job is Slurm's "batch" step: SLURM_STEP_ID is absent there or
// the batch step's number (0xfffffffb in Slurm 22.05+, older releases used 0xfffffffe).
bool in_slurm_step(const Reader& env) {
  const char* step = env.raw("SLURM_STEP_ID");
  if (!step) step = env.raw("SLURM_STEPID");
  if (!step || !env.raw("SLURM_PROCID")) return false;
  std::string_view s = step;
  return s != "4294967291" && s != "4294967294" && s != "4294967293";
}

}  // namespace

std::optional<int> parse_index_variable(const char* name, const char* value) {
  if (!value || !*value) return std::nullopt;
  long n = 0;
  for (const char* p = value; *p; ++p) {
    if (*p < '0' || *p > '9') {
      throw RankEnvironmentError(shown(name, value) + " is not a non-negative decimal integer (digits only)");
    }
    n = n * 10 + (*p - '0');
    if (n > kMaxIndex) throw RankEnvironmentError(shown(name, value) + " is larger than 10^9");
  }
  return static_cast<int>(n);
}

int slurm_tasks_on_node(const char* name, const std::string& list, int node) {
  // Entries "N" or "N(xR)", comma-separated.
  auto bad = [&](const std::string& why) {
    return RankEnvironmentError(std::string(name) + "='" + list + "': " + why);
  };
  if (list.empty()) throw bad("empty list");
  int first_node = 0;
  std::optional<int> found;
  size_t at = 0;
  while (at < list.size()) {
    size_t end = list.find(',', at);
    if (end == std::string::npos) end = list.size();
    std::string entry = list.substr(at, end - at);
    std::string tasks_text = entry, repeat_text = "1";
    if (size_t paren = entry.find("(x"); paren != std::string::npos) {
      if (entry.back() != ')') throw bad("entry '" + entry + "' is not N or N(xR)");
      tasks_text = entry.substr(0, paren);
      repeat_text = entry.substr(paren + 2, entry.size() - paren - 3);
    }
    std::optional<int> tasks, repeat;
    try {
      tasks = parse_index_variable(name, tasks_text.c_str());
      repeat = parse_index_variable(name, repeat_text.c_str());
    } catch (const RankEnvironmentError&) {
      throw bad("entry '" + entry + "' is not N or N(xR)");
    }
    if (!tasks || !repeat || *tasks < 1 || *repeat < 1) throw bad("entry '" + entry + "' is not N or N(xR) with N, R >= 1");
    // The whole list is checked, not only up to this node's entry.
    if (node >= first_node && node < first_node + *repeat) found = *tasks;
    first_node += *repeat;
    at = end + 1;
    if (at == list.size()) throw bad("empty entry at the end");
  }
  if (found) return *found;
  throw bad("no entry for node " + std::to_string(node) + " (the list covers " + std::to_string(first_node) + " node" +
            (first_node == 1 ? "" : "s") + ")");
}

RankEnvironment rank_environment(const EnvLookup& getenv) {
  RankEnvironment env;
  Reader any(getenv, "");

  if (any.raw("OMPI_COMM_WORLD_RANK") || any.raw("OMPI_COMM_WORLD_SIZE")) {
    Reader r(getenv, "Open MPI");
    env.source = "openmpi";
    env.rank = r.required("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE");
    env.world_size = r.count("OMPI_COMM_WORLD_SIZE", r.required("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"));
    check_below("OMPI_COMM_WORLD_RANK", env.rank, "OMPI_COMM_WORLD_SIZE", env.world_size, "Open MPI");
    env.local_rank = r.index("OMPI_COMM_WORLD_LOCAL_RANK").value_or(env.rank);
    env.local_world_size = r.count("OMPI_COMM_WORLD_LOCAL_SIZE", r.index("OMPI_COMM_WORLD_LOCAL_SIZE").value_or(env.world_size));
    check_below("OMPI_COMM_WORLD_LOCAL_RANK", env.local_rank, "OMPI_COMM_WORLD_LOCAL_SIZE", env.local_world_size, "Open MPI");
    check_below("OMPI_COMM_WORLD_LOCAL_SIZE", env.local_world_size - 1, "OMPI_COMM_WORLD_SIZE", env.world_size, "Open MPI");
  } else if (in_slurm_step(any)) {
    Reader r(getenv, "Slurm");
    env.source = "slurm";
    const char* size_name = r.raw("SLURM_STEP_NUM_TASKS") ? "SLURM_STEP_NUM_TASKS" : "SLURM_NTASKS";
    const char* nodes_name = r.raw("SLURM_STEP_NUM_NODES") ? "SLURM_STEP_NUM_NODES" : "SLURM_NNODES";
    const char* per_node_name = r.raw("SLURM_STEP_TASKS_PER_NODE") ? "SLURM_STEP_TASKS_PER_NODE" : "SLURM_TASKS_PER_NODE";
    env.rank = r.required("SLURM_PROCID", "SLURM_STEP_ID");
    env.world_size = r.count(size_name, r.required(size_name, "SLURM_PROCID"));
    check_below("SLURM_PROCID", env.rank, size_name, env.world_size, "Slurm");
    env.local_rank = r.required("SLURM_LOCALID", "SLURM_PROCID");
    env.node_rank = r.required("SLURM_NODEID", "SLURM_PROCID");
    env.num_nodes = r.count(nodes_name, r.index(nodes_name).value_or(1));
    check_below("SLURM_NODEID", *env.node_rank, nodes_name, *env.num_nodes, "Slurm");
    if (const char* per_node = r.raw(per_node_name)) {
      env.local_world_size = slurm_tasks_on_node(per_node_name, per_node, *env.node_rank);
    } else if (*env.num_nodes == 1) {
      env.local_world_size = env.world_size;
    } else {
      throw RankEnvironmentError(std::string("Slurm launcher variables: ") + nodes_name + "=" +
                                 std::to_string(*env.num_nodes) + " but neither SLURM_STEP_TASKS_PER_NODE nor " +
                                 "SLURM_TASKS_PER_NODE is set; cannot tell how many ranks share this node");
    }
    check_below("SLURM_LOCALID", env.local_rank, per_node_name, env.local_world_size, "Slurm");
    check_below(per_node_name, env.local_world_size - 1, size_name, env.world_size, "Slurm");
  } else if (any.raw("PMI_RANK") || any.raw("PMI_SIZE")) {
    Reader r(getenv, "MPICH (PMI)");
    env.source = "mpich";
    env.rank = r.required("PMI_RANK", "PMI_SIZE");
    env.world_size = r.count("PMI_SIZE", r.required("PMI_SIZE", "PMI_RANK"));
    check_below("PMI_RANK", env.rank, "PMI_SIZE", env.world_size, "MPICH (PMI)");
    env.local_rank = r.index("MPI_LOCALRANKID").value_or(env.rank);
    env.local_world_size = r.count("MPI_LOCALNRANKS", r.index("MPI_LOCALNRANKS").value_or(env.world_size));
    check_below("MPI_LOCALRANKID", env.local_rank, "MPI_LOCALNRANKS", env.local_world_size, "MPICH (PMI)");
  } else if (any.raw("RANK") || any.raw("WORLD_SIZE")) {
    Reader r(getenv, "torchrun");
    env.source = "torchrun";
    env.rank = r.required("RANK", "WORLD_SIZE");
    env.world_size = r.count("WORLD_SIZE", r.required("WORLD_SIZE", "RANK"));
    check_below("RANK", env.rank, "WORLD_SIZE", env.world_size, "torchrun");
    // Without LOCAL_RANK and LOCAL_WORLD_SIZE all ranks are taken to share one node.
    if (r.raw("LOCAL_RANK") || r.raw("LOCAL_WORLD_SIZE")) {
      env.local_rank = r.required("LOCAL_RANK", "LOCAL_WORLD_SIZE");
      env.local_world_size = r.count("LOCAL_WORLD_SIZE", r.required("LOCAL_WORLD_SIZE", "LOCAL_RANK"));
    } else {
      env.local_rank = env.rank;
      env.local_world_size = env.world_size;
    }
    check_below("LOCAL_RANK", env.local_rank, "LOCAL_WORLD_SIZE", env.local_world_size, "torchrun");
    check_below("LOCAL_WORLD_SIZE", env.local_world_size - 1, "WORLD_SIZE", env.world_size, "torchrun");
    env.node_rank = r.index("GROUP_RANK");
    if (env.node_rank && env.world_size % env.local_world_size == 0) {
      env.num_nodes = env.world_size / env.local_world_size;
      check_below("GROUP_RANK", *env.node_rank, "WORLD_SIZE/LOCAL_WORLD_SIZE", *env.num_nodes, "torchrun");
    }
  } else if (const char* pmix = any.raw("PMIX_RANK")) {
    throw RankEnvironmentError(shown("PMIX_RANK", pmix) +
                               " is set but no launcher variable gives the world size (OMPI_COMM_WORLD_SIZE, "
                               "SLURM_STEP_NUM_TASKS, PMI_SIZE or WORLD_SIZE); start the job with mpirun, srun or axonrun");
  }

  if (env.launched()) {
    if (std::optional<int> pmix = parse_index_variable("PMIX_RANK", any.raw("PMIX_RANK")); pmix && *pmix != env.rank) {
      const char* rank_name = env.source == "openmpi" ? "OMPI_COMM_WORLD_RANK"
                              : env.source == "slurm" ? "SLURM_PROCID"
                              : env.source == "mpich" ? "PMI_RANK"
                                                      : "RANK";
      throw RankEnvironmentError("PMIX_RANK=" + std::to_string(*pmix) + " differs from " + rank_name + "=" +
                                 std::to_string(env.rank) + ": the PMIx server and the launcher disagree on this rank");
    }
  }
  if (const char* addr = any.raw("MASTER_ADDR")) env.master_addr = addr;
  if (std::optional<int> port = parse_index_variable("MASTER_PORT", any.raw("MASTER_PORT"))) {
    if (*port < 1 || *port > 65535) {
      throw RankEnvironmentError("MASTER_PORT=" + std::to_string(*port) + " is not a TCP port (1 to 65535)");
    }
    env.master_port = port;
  }
  return env;
}

RankEnvironment rank_environment() {
  return rank_environment([](const char* name) -> const char* { return std::getenv(name); });
}

}  // namespace axon
