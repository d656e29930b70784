// End-to-end: how many BLAS threads fashion_mnist runs when --threads is not given, started as a
// user would start it (environment variables, taskset, axonrun), on a tiny made-up dataset.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "../support/process.h"
#include "../support/require_mpi.h"

namespace {

using ::testing::HasSubstr;
using axon::testing::run_command;
namespace fs = std::filesystem;

std::string bin(const std::string& name) { return std::string(AXON_BIN_DIR) + "/" + name; }

void write_idx(const fs::path& path, std::vector<uint32_t> dims, unsigned char fill) {
  std::ofstream out(path, std::ios::binary);
  const unsigned char magic[4] = {0, 0, 0x08, static_cast<unsigned char>(dims.size())};
  out.write(reinterpret_cast<const char*>(magic), 4);
  size_t count = 1;
  for (uint32_t d : dims) {
    const unsigned char be[4] = {static_cast<unsigned char>(d >> 24), static_cast<unsigned char>(d >> 16),
                                 static_cast<unsigned char>(d >> 8), static_cast<unsigned char>(d)};
    out.write(reinterpret_cast<const char*>(be), 4);
    count *= d;
  }
  std::vector<char> values(count);
  for (size_t i = 0; i < count; ++i) values[i] = static_cast<char>((fill + i) % 10);
  out.write(values.data(), static_cast<std::streamsize>(values.size()));
}

// A Fashion-MNIST folder with a few samples, enough for one quick epoch.
class FashionMnistThreads : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("axon_tiny_fmnist_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    write_idx(dir_ / "train-images-idx3-ubyte", {32, 28, 28}, 0);
    write_idx(dir_ / "train-labels-idx1-ubyte", {32}, 0);
    write_idx(dir_ / "t10k-images-idx3-ubyte", {16, 28, 28}, 3);
    write_idx(dir_ / "t10k-labels-idx1-ubyte", {16}, 3);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // fashion_mnist without --threads, with the thread variables cleared and then `env` set;
  // bounded: a hung run is killed after 120 s (and fails its test).
  std::string program(const std::string& env = "") const {
    return "timeout -k 5 120 env -u OMP_NUM_THREADS -u OPENBLAS_NUM_THREADS " + env + " ";
  }
  std::string args() const { return bin("fashion_mnist") + " --data " + dir_.string() + " --batch-size 16 --no-progress"; }

  fs::path dir_;
};

TEST_F(FashionMnistThreads, OneAllowedCpuGivesOneThread) {
  auto r = run_command(program() + "taskset -c 0 " + args());
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("1 rank(s) × 1 thread(s) (1 CPU in affinity mask / 1 rank on this node;"));
}

TEST_F(FashionMnistThreads, ThreadVariablesAreHonoured) {
  auto omp = run_command(program("OMP_NUM_THREADS=1") + args());
  ASSERT_EQ(omp.code, 0) << omp.output;
  EXPECT_THAT(omp.output, HasSubstr("× 1 thread(s) (from OMP_NUM_THREADS;"));

  auto openblas = run_command(program("OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=3") + args());
  ASSERT_EQ(openblas.code, 0) << openblas.output;
  EXPECT_THAT(openblas.output, HasSubstr("× 1 thread(s) (from OPENBLAS_NUM_THREADS;"));

  // --threads still wins over both.
  auto flag = run_command(program("OMP_NUM_THREADS=1") + args() + " --threads 2");
  ASSERT_EQ(flag.code, 0) << flag.output;
  EXPECT_THAT(flag.output, HasSubstr("× 2 thread(s) (from --threads;"));
}

TEST_F(FashionMnistThreads, InvalidThreadVariableIsAnError) {
  AXON_REQUIRE_MPI();
  auto r = run_command(program("OMP_NUM_THREADS=two") + args());
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("OMP_NUM_THREADS='two'"));

  // axonrun only warns (the program may ignore the variable); ranks without --threads reject it.
  auto launcher = run_command(program("OPENBLAS_NUM_THREADS=0") + bin("axonrun") + " -n 2 " + args());
  EXPECT_NE(launcher.code, 0) << launcher.output;
  EXPECT_NE(launcher.code, 2) << "axonrun itself refused the job: " << launcher.output;
  EXPECT_THAT(launcher.output, HasSubstr("axonrun: warning: OPENBLAS_NUM_THREADS='0' is not a thread count"));
  EXPECT_THAT(launcher.output, HasSubstr("OPENBLAS_NUM_THREADS='0'"));
}

// fashion_mnist ignores the variables when given --threads, and so the job runs under axonrun.
TEST_F(FashionMnistThreads, InvalidThreadVariableIsOnlyAWarningForTheLauncher) {
  AXON_REQUIRE_MPI();
  auto r = run_command(program("OMP_NUM_THREADS=two") + bin("axonrun") + " -n 2 " + args() + " --threads 1");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("axonrun: warning: OMP_NUM_THREADS='two' is not a thread count (expected an integer "
                                  "from 1 to 1024); ranks started without --threads will reject it\n"));
  EXPECT_THAT(r.output, HasSubstr("2 rank(s) × 1 thread(s) (from --threads;"));
}

// The thread count (part of the run's record) is the same with and without axonrun: axonrun
// does not let mpirun bind the rank to one core.
TEST_F(FashionMnistThreads, OneRankUnderTheLauncherRunsAsManyThreadsAsWithout) {
  AXON_REQUIRE_MPI();
  auto threads = [](const std::string& output) {
    size_t at = output.find(" thread(s) (");
    size_t from = output.rfind("× ", at);
    return at == std::string::npos || from == std::string::npos ? std::string("?") : output.substr(from, at - from);
  };
  auto alone = run_command(program() + args());
  ASSERT_EQ(alone.code, 0) << alone.output;
  auto launched = run_command(program() + bin("axonrun") + " -n 1 " + args());
  ASSERT_EQ(launched.code, 0) << launched.output;
  EXPECT_EQ(threads(launched.output), threads(alone.output)) << "alone:\n" << alone.output << "\nunder axonrun:\n"
                                                             << launched.output;
  EXPECT_NE(threads(alone.output), "?") << alone.output;
}

TEST_F(FashionMnistThreads, RanksUnderTheLauncherShareTheAllowedCpus) {
  AXON_REQUIRE_MPI();
  auto r = run_command(program() + "taskset -c 0 " + bin("axonrun") + " -n 2 " + args());
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("2 rank(s) × 1 thread(s) (1 CPU in affinity mask / 2 ranks on this node;"));
}

}  // namespace
