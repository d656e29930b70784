// Prints this process's rank environment as one line, for tests under real launchers (mpirun,
// srun, axonrun, a Slurm batch script): "source=slurm rank=1 world_size=2 local_rank=1
// local_world_size=2 node_rank=0 num_nodes=1". A RankEnvironmentError is printed and exits 1.
#include <cstdio>
#include <string>

#include "axon/rank_env.h"

int main() {
  try {
    const axon::RankEnvironment env = axon::rank_environment();
    auto optional = [](const std::optional<int>& n) { return n ? std::to_string(*n) : std::string("unknown"); };
    std::printf("source=%s rank=%d world_size=%d local_rank=%d local_world_size=%d node_rank=%s num_nodes=%s\n",
                env.source.c_str(), env.rank, env.world_size, env.local_rank, env.local_world_size,
                optional(env.node_rank).c_str(), optional(env.num_nodes).c_str());
    return 0;
  } catch (const axon::RankEnvironmentError& e) {
    std::fprintf(stderr, "rank_env_print: error: %s\n", e.what());
    return 1;
  }
}
