// See axon/cpu_budget.h. Compiled into axon_tensor and, on its own, into axonrun: keep it free
// of other Axon code and of third-party libraries.
#include "axon/cpu_budget.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string_view>

namespace axon {

namespace {

std::string plural(int n, const char* word) { return std::to_string(n) + " " + word + (n == 1 ? "" : "s"); }

// The whole file without its trailing newline, or nullopt when it cannot be opened.
std::optional<std::string> read_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::stringstream text;
  text << in.rdbuf();
  std::string s = text.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

std::optional<long long> parse_integer(std::string_view text) {
  long long value = 0;
  auto [end, err] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || err != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

[[noreturn]] void bad_cgroup_file(const std::string& path, const std::string& contents) {
  throw std::runtime_error("cannot read the CPU quota in " + path + ": unexpected contents '" + contents + "'");
}

// Whole CPUs a quota allows: rounded down, because BLAS threads beyond the quota are throttled
// and then stall each other; at least 1.
int quota_cpus(long long quota, long long period) { return static_cast<int>(std::max(1LL, quota / period)); }

std::optional<int> cgroup_v2_limit(const std::string& root, std::string* detail) {
  const std::string path = root + "/cpu.max";
  auto text = read_file(path);
  if (!text) return std::nullopt;
  std::string_view line = *text;
  size_t space = line.find(' ');
  if (space == std::string_view::npos) bad_cgroup_file(path, *text);
  std::string_view quota_text = line.substr(0, space);
  auto period = parse_integer(line.substr(space + 1));
  if (!period || *period <= 0) bad_cgroup_file(path, *text);
  if (quota_text == "max") return std::nullopt;
  auto quota = parse_integer(quota_text);
  if (!quota || *quota <= 0) bad_cgroup_file(path, *text);
  if (detail) *detail = path + ": " + *text;
  return quota_cpus(*quota, *period);
}

std::optional<int> cgroup_v1_limit(const std::string& dir, std::string* detail) {
  const std::string quota_path = dir + "/cpu.cfs_quota_us", period_path = dir + "/cpu.cfs_period_us";
  auto quota_text = read_file(quota_path);
  auto period_text = read_file(period_path);
  if (!quota_text || !period_text) return std::nullopt;
  auto quota = parse_integer(*quota_text);
  auto period = parse_integer(*period_text);
  if (!quota || *quota == 0 || *quota < -1) bad_cgroup_file(quota_path, *quota_text);
  if (!period || *period <= 0) bad_cgroup_file(period_path, *period_text);
  if (*quota == -1) return std::nullopt;  // v1's "no quota"
  if (detail) *detail = quota_path + ": " + *quota_text + ", " + period_path + ": " + *period_text;
  return quota_cpus(*quota, *period);
}

int affinity_cpu_count() {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (::sched_getaffinity(0, sizeof(allowed), &allowed) == 0) {
    int n = CPU_COUNT(&allowed);
    if (n > 0) return n;
  }
  long online = ::sysconf(_SC_NPROCESSORS_ONLN);
  return online > 0 ? static_cast<int>(online) : 1;
}

// The environment's thread count, if a variable in `names` is set (first one wins).
std::optional<std::pair<std::string, int>> threads_from_env(const EnvLookup& env) {
  for (const char* name : {"OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"}) {
    const char* value = env(name);
    if (!value || !*value) continue;
    auto n = parse_integer(value);
    if (!n || *n < 1 || *n > kMaxCpuBudgetThreads) {
      throw std::invalid_argument(std::string(name) + "='" + value + "' is not a thread count (expected an integer from 1 to " +
                                  std::to_string(kMaxCpuBudgetThreads) + ")");
    }
    return std::pair<std::string, int>(name, static_cast<int>(*n));
  }
  return std::nullopt;
}

}  // namespace

std::optional<int> cgroup_cpu_limit(const std::string& cgroup_root, std::string* detail) {
  if (cgroup_root.empty()) return std::nullopt;
  // v2 first: on a hybrid machine the v1 hierarchy may still be mounted but unused.
  if (auto v2 = cgroup_v2_limit(cgroup_root, detail)) return v2;
  for (const char* sub : {"/cpu", "/cpu,cpuacct", ""}) {
    if (auto v1 = cgroup_v1_limit(cgroup_root + sub, detail)) return v1;
  }
  return std::nullopt;
}

UsableCpus usable_cpus(int affinity_cpus, const std::string& cgroup_root) {
  UsableCpus result;
  result.cpus = std::max(1, affinity_cpus);
  result.source = plural(result.cpus, "CPU") + " in affinity mask";
  std::string detail;
  if (auto quota = cgroup_cpu_limit(cgroup_root, &detail); quota && *quota < result.cpus) {
    result.cpus = *quota;
    result.source = plural(*quota, "CPU") + " by cgroup quota (" + detail + ")";
  }
  return result;
}

UsableCpus usable_cpus() { return usable_cpus(affinity_cpu_count(), "/sys/fs/cgroup"); }

CpuBudget cpu_budget(int ranks_on_node, const EnvLookup& env, const UsableCpus& cpus) {
  if (auto from_env = threads_from_env(env)) return {from_env->second, "from " + from_env->first};
  const int ranks = std::max(1, ranks_on_node);
  return {std::max(1, cpus.cpus / ranks), cpus.source + " / " + plural(ranks, "rank") + " on this node"};
}

CpuBudget cpu_budget(int ranks_on_node) {
  const EnvLookup env = [](const char* name) -> const char* { return std::getenv(name); };
  // The environment decides alone when set: then the CPUs (and cgroup files) are not read.
  if (threads_from_env(env)) return cpu_budget(ranks_on_node, env, UsableCpus{});
  return cpu_budget(ranks_on_node, env, usable_cpus());
}

}  // namespace axon
