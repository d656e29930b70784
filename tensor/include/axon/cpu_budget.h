// How many BLAS threads one rank should run when the user did not say (no --threads).
//
// Shared by the launcher (axonrun compiles tensor/src/cpu_budget.cpp into itself and links no
// Axon library) and by Axon programs, so both count the same CPUs the same way. Standard C++
// and POSIX only: no other Axon header may be included here.
#pragma once

#include <functional>
#include <optional>
#include <string>

namespace axon {

// A thread count and where it came from, for the program's start-up line.
struct CpuBudget {
  int threads = 1;     // threads per rank, >= 1
  std::string source;  // e.g. "from OMP_NUM_THREADS", "1 CPU in affinity mask / 2 ranks on this node"
};

// The CPUs this process may use. cpus >= 1; source says which limit decided it.
struct UsableCpus {
  int cpus = 1;
  std::string source;  // e.g. "2 CPUs in affinity mask", "1 CPU by cgroup quota cpu.max 50000 100000"
};

// Returns the environment variable's value, or nullptr when it is not set (like std::getenv).
using EnvLookup = std::function<const char*(const char* name)>;

// Largest thread count accepted from the environment (a typo such as 10000 is an error).
inline constexpr int kMaxCpuBudgetThreads = 1024;

// The CPU quota of the cgroup rooted at cgroup_root, in whole CPUs (quota / period, rounded
// down, at least 1), or std::nullopt when there is no quota ("max", -1, or no file). Files read:
//   cgroup v2: <root>/cpu.max ("<quota> <period>" in microseconds, quota may be "max")
//   cgroup v1: <root>/cpu/cpu.cfs_quota_us and <root>/cpu/cpu.cfs_period_us (also without the
//              cpu/ level, and as cpu,cpuacct/), quota -1 meaning unlimited.
// *detail receives the file and its contents when a quota applies.
// Throws std::runtime_error naming the file and its contents when a file exists but cannot be
// parsed, or holds a zero or negative period.
std::optional<int> cgroup_cpu_limit(const std::string& cgroup_root, std::string* detail = nullptr);

// The CPUs this process may run on: sched_getaffinity's count (the online CPU count if that
// fails), lowered to the cgroup quota under /sys/fs/cgroup when that is smaller.
UsableCpus usable_cpus();
// The same from given inputs, for tests: affinity_cpus >= 1 CPUs in the affinity mask, and
// the cgroup root directory to read (see cgroup_cpu_limit; an empty root reads nothing).
UsableCpus usable_cpus(int affinity_cpus, const std::string& cgroup_root);

// Threads per rank, in this order:
//   1. OPENBLAS_NUM_THREADS, then OMP_NUM_THREADS (the order OpenBLAS itself uses): a value is a
//      thread count per process, used as is. An empty value counts as unset.
//   2. usable_cpus() divided by ranks_on_node (rounded down), at least 1.
// ranks_on_node: ranks sharing this machine (values < 1 count as 1).
// Throws std::invalid_argument naming the variable and its value when that value is not an
// integer in 1..kMaxCpuBudgetThreads; std::runtime_error from cgroup_cpu_limit.
CpuBudget cpu_budget(int ranks_on_node);
// The same from given inputs, for tests: env instead of std::getenv, cpus instead of usable_cpus().
CpuBudget cpu_budget(int ranks_on_node, const EnvLookup& env, const UsableCpus& cpus);

}  // namespace axon
