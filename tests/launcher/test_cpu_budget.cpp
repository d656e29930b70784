// The per-rank thread budget shared by axonrun and Axon programs (axon/cpu_budget.h), fed with
// made-up environments, affinity counts and cgroup files.
#include "axon/cpu_budget.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>

namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

// An environment made of the given variables only.
axon::EnvLookup env_of(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  };
}

const axon::UsableCpus kEightCpus{8, "8 CPUs in affinity mask"};

// A temporary directory that imitates /sys/fs/cgroup.
struct FakeCgroup {
  FakeCgroup() {
    static int counter = 0;
    root = fs::temp_directory_path() / ("axon_cgroup_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(root);
  }
  ~FakeCgroup() { fs::remove_all(root); }
  void write(const std::string& relative, const std::string& contents) const {
    fs::create_directories((root / relative).parent_path());
    std::ofstream(root / relative) << contents;
  }
  fs::path root;
};

TEST(CpuBudget, OpenblasNumThreadsWinsOverOmpNumThreads) {
  auto b = axon::cpu_budget(2, env_of({{"OPENBLAS_NUM_THREADS", "3"}, {"OMP_NUM_THREADS", "5"}}), kEightCpus);
  EXPECT_EQ(b.threads, 3);
  EXPECT_EQ(b.source, "from OPENBLAS_NUM_THREADS");
}

TEST(CpuBudget, OmpNumThreadsIsUsedAsIsNotDividedByRanks) {
  auto b = axon::cpu_budget(4, env_of({{"OMP_NUM_THREADS", "1"}}), kEightCpus);
  EXPECT_EQ(b.threads, 1);
  EXPECT_EQ(b.source, "from OMP_NUM_THREADS");
  EXPECT_EQ(axon::cpu_budget(4, env_of({{"OMP_NUM_THREADS", "6"}}), kEightCpus).threads, 6);
}

TEST(CpuBudget, EmptyVariableCountsAsUnset) {
  auto b = axon::cpu_budget(1, env_of({{"OPENBLAS_NUM_THREADS", ""}, {"OMP_NUM_THREADS", "2"}}), kEightCpus);
  EXPECT_EQ(b.threads, 2);
  EXPECT_EQ(b.source, "from OMP_NUM_THREADS");
}

TEST(CpuBudget, InvalidValueIsAnErrorNamingVariableAndValue) {
  for (const char* name : {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"}) {
    for (const char* bad : {"0", "-2", "abc", "2x", " 2", "4,2", "99999999999999999999", "1025"}) {
      try {
        axon::cpu_budget(1, env_of({{name, bad}}), kEightCpus);
        ADD_FAILURE() << name << "=" << bad << " was accepted";
      } catch (const std::invalid_argument& e) {
        EXPECT_THAT(e.what(), HasSubstr(std::string(name) + "='" + bad + "'"));
      }
    }
  }
  // A bad OPENBLAS_NUM_THREADS is not hidden by a good OMP_NUM_THREADS.
  EXPECT_THROW(axon::cpu_budget(1, env_of({{"OPENBLAS_NUM_THREADS", "x"}, {"OMP_NUM_THREADS", "2"}}), kEightCpus),
               std::invalid_argument);
}

TEST(CpuBudget, UsableCpusAreSharedByTheRanksOnTheNode) {
  auto b = axon::cpu_budget(2, env_of({}), kEightCpus);
  EXPECT_EQ(b.threads, 4);
  EXPECT_EQ(b.source, "8 CPUs in affinity mask / 2 ranks on this node");
  EXPECT_EQ(axon::cpu_budget(3, env_of({}), kEightCpus).threads, 2);  // rounded down

  auto one = axon::cpu_budget(2, env_of({}), axon::usable_cpus(1, ""));
  EXPECT_EQ(one.threads, 1);  // never 0
  EXPECT_EQ(one.source, "1 CPU in affinity mask / 2 ranks on this node");
  EXPECT_EQ(axon::cpu_budget(0, env_of({}), kEightCpus).threads, 8);  // unknown ranks count as 1
}

TEST(CpuBudget, AffinityMaskWithoutCgroupQuota) {
  FakeCgroup cg;  // no files at all
  auto cpus = axon::usable_cpus(6, cg.root.string());
  EXPECT_EQ(cpus.cpus, 6);
  EXPECT_EQ(cpus.source, "6 CPUs in affinity mask");
}

TEST(CpuBudget, CgroupV2QuotaLimitsTheCpus) {
  FakeCgroup cg;
  cg.write("cpu.max", "50000 100000\n");
  EXPECT_EQ(axon::cgroup_cpu_limit(cg.root.string()), 1);  // half a CPU still gets one thread
  auto cpus = axon::usable_cpus(8, cg.root.string());
  EXPECT_EQ(cpus.cpus, 1);
  EXPECT_THAT(cpus.source, HasSubstr("1 CPU by cgroup quota"));
  EXPECT_THAT(cpus.source, HasSubstr("cpu.max: 50000 100000"));

  cg.write("cpu.max", "250000 100000\n");
  EXPECT_EQ(axon::cgroup_cpu_limit(cg.root.string()), 2);
  EXPECT_EQ(axon::cpu_budget(2, env_of({}), axon::usable_cpus(8, cg.root.string())).threads, 1);
  // A quota above the affinity mask changes nothing.
  EXPECT_EQ(axon::usable_cpus(1, cg.root.string()).cpus, 1);
  EXPECT_EQ(axon::usable_cpus(1, cg.root.string()).source, "1 CPU in affinity mask");
}

TEST(CpuBudget, CgroupV2MaxMeansUnlimited) {
  FakeCgroup cg;
  cg.write("cpu.max", "max 100000\n");
  EXPECT_EQ(axon::cgroup_cpu_limit(cg.root.string()), std::nullopt);
  EXPECT_EQ(axon::usable_cpus(8, cg.root.string()).cpus, 8);
}

TEST(CpuBudget, CgroupV1Quota) {
  FakeCgroup cg;
  cg.write("cpu/cpu.cfs_quota_us", "150000\n");
  cg.write("cpu/cpu.cfs_period_us", "100000\n");
  EXPECT_EQ(axon::cgroup_cpu_limit(cg.root.string()), 1);
  EXPECT_THAT(axon::usable_cpus(4, cg.root.string()).source, HasSubstr("cpu.cfs_quota_us: 150000"));

  cg.write("cpu/cpu.cfs_quota_us", "-1\n");  // v1's "no quota"
  EXPECT_EQ(axon::cgroup_cpu_limit(cg.root.string()), std::nullopt);
}

TEST(CpuBudget, MalformedCgroupFileIsAnErrorNamingIt) {
  FakeCgroup cg;
  for (const char* bad : {"fifty 100000", "50000", "50000 0", "0 100000", "max abc"}) {
    cg.write("cpu.max", bad);
    try {
      axon::cgroup_cpu_limit(cg.root.string());
      ADD_FAILURE() << "cpu.max '" << bad << "' was accepted";
    } catch (const std::runtime_error& e) {
      EXPECT_THAT(e.what(), HasSubstr((cg.root / "cpu.max").string()));
      EXPECT_THAT(e.what(), HasSubstr(std::string("'") + bad + "'"));
    }
  }
}

TEST(CpuBudget, RealMachineGivesAtLeastOneThread) {
  auto cpus = axon::usable_cpus();
  EXPECT_GE(cpus.cpus, 1);
  EXPECT_FALSE(cpus.source.empty());
}

}  // namespace
