// bin/axon-bench end to end, under real mpirun: every collective's values checked at 2 and 3
// ranks (odd world, sizes not divisible by it), the JSON rows, the exit status when a value is
// wrong, usage errors, and one small training measurement. No timing is asserted.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "../support/process.h"
#include "../support/require_mpi.h"

using ::testing::HasSubstr;
using axon::testing::run_command;

namespace {

std::string bench() { return std::string(AXON_BIN_DIR) + "/axon-bench"; }

std::string mpirun(int np, const std::string& args) {
#ifdef AXON_MPIEXEC
  return std::string("timeout -k 10 120 ") + AXON_MPIEXEC + " --oversubscribe -np " + std::to_string(np) + " " + bench() +
         " " + args;
#else
  (void)np;
  return bench() + " " + args;
#endif
}

std::vector<nlohmann::json> json_lines(const std::string& out) {
  std::vector<nlohmann::json> rows;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);)
    if (!line.empty() && line[0] == '{') rows.push_back(nlohmann::json::parse(line));
  return rows;
}

// Runs the collectives at `np` ranks and checks every row: no wrong values, sizes as asked,
// bandwidths consistent with the time.
void expect_all_correct(int np, const std::string& args, size_t expected_rows) {
  const auto r = run_command(mpirun(np, "collectives --json --iters 2 --warmup 1 " + args));
  ASSERT_EQ(r.code, 0) << r.output;
  const auto rows = json_lines(r.stdout_text);
  ASSERT_EQ(rows.size(), expected_rows) << r.output;
  for (const auto& row : rows) {
    EXPECT_EQ(row["errors"], 0) << row.dump();
    EXPECT_EQ(row["ranks"], np) << row.dump();
    EXPECT_GT(row["time_us"].get<double>(), 0.0) << row.dump();
    const double algbw = row["bytes"].get<double>() / (row["time_us"].get<double>() * 1e-6) / 1e9;
    EXPECT_NEAR(row["algbw_GBps"].get<double>(), algbw, 1e-3 + 1e-3 * algbw) << row.dump();
  }
}

}  // namespace

TEST(AxonBench, EveryCollectiveIsCorrectAtTwoRanks) {
  AXON_REQUIRE_MPI();
  // 8 B .. 64 KiB ×4: 7 sizes per collective, 4 collectives; the raw MPI comparison alongside.
  expect_all_correct(2, "-b 8 -e 64K -f 4 --compare-mpi", 4 * 7);
}

TEST(AxonBench, EveryCollectiveIsCorrectAtThreeRanksWithSizesNotDivisibleByTheWorld) {
  AXON_REQUIRE_MPI();
  // 100 B ×3 .. 8100 B with f64: 12.5 elements, 37.5, ...; reduce_scatter and allgather round
  // the block down, and rows under one element per rank are left out (8100 B: all 5 rows).
  expect_all_correct(3, "-b 100 -e 8100 -f 3 --dtype f64 --op max", 4 * 5);
  // bf16, 4 B .. 4000 B: the 4-byte row has no reduce_scatter/allgather block (2 elements, 3 ranks).
  expect_all_correct(3, "-b 4 -e 4000 -f 10 --dtype bf16 --op avg --mode async --root 2", 4 * 4 - 2);
}

TEST(AxonBench, JsonRowsNameEachCollectiveAndTheBusBandwidthFactor) {
  AXON_REQUIRE_MPI();
  const auto r = run_command(mpirun(2, "collectives --json -b 4K -e 4K --iters 2 --warmup 0"));
  ASSERT_EQ(r.code, 0) << r.output;
  std::map<std::string, nlohmann::json> by_op;
  for (const auto& row : json_lines(r.stdout_text)) by_op[row["op"]] = row;
  ASSERT_EQ(by_op.size(), 4u) << r.output;
  // nccl-tests' factors at n = 2: allreduce 2(n-1)/n = 1, reduce_scatter/allgather 1/2, broadcast 1.
  auto ratio = [&](const char* op) { return by_op[op]["busbw_GBps"].get<double>() / by_op[op]["algbw_GBps"].get<double>(); };
  EXPECT_NEAR(ratio("allreduce"), 1.0, 1e-3);
  EXPECT_NEAR(ratio("reduce_scatter"), 0.5, 1e-3);
  EXPECT_NEAR(ratio("allgather"), 0.5, 1e-3);
  EXPECT_NEAR(ratio("broadcast"), 1.0, 1e-3);
  EXPECT_EQ(by_op["allgather"]["bytes"], 4096);
  EXPECT_EQ(by_op["allgather"]["count"], 512);  // elements per rank
}

TEST(AxonBench, TheTableHasTheNcclTestsColumnsAndTheVerdict) {
  AXON_REQUIRE_MPI();
  const auto r = run_command(mpirun(2, "collectives --collectives allreduce -b 1K -e 2K --iters 2 --compare-mpi"));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_THAT(r.stdout_text, HasSubstr("algbw"));
  EXPECT_THAT(r.stdout_text, HasSubstr("busbw"));
  EXPECT_THAT(r.stdout_text, HasSubstr("#wrong"));
  EXPECT_THAT(r.stdout_text, HasSubstr("ratio"));
  EXPECT_THAT(r.stdout_text, HasSubstr("# Out of bounds values : 0 OK"));
}

TEST(AxonBench, AWrongValueIsCountedAndMakesTheExitStatusNonZero) {
  AXON_REQUIRE_MPI();
  // The self-test hook corrupts one element of rank 1's result before the check.
  const auto r = run_command("AXON_BENCH_INJECT_WRONG_VALUE=1 " +
                             mpirun(2, "collectives --json --collectives allreduce,allgather -b 64 -e 64 --iters 1"));
  EXPECT_EQ(r.code, 1) << r.output;
  const auto rows = json_lines(r.stdout_text);
  ASSERT_EQ(rows.size(), 2u) << r.output;
  for (const auto& row : rows) EXPECT_EQ(row["errors"], 1) << row.dump();
  EXPECT_THAT(r.output, HasSubstr("wrong value"));
}

TEST(AxonBench, BadFlagsAreAUsageError) {
  for (const char* args : {"collectives --iters 0", "collectives --min-bytes 1X", "collectives -b 64K -e 1K",
                           "collectives --dtype i32", "collectives --op prod", "collectives --backend gloo",
                           "collectives --compare-mpi --dtype bf16", "train --threads 0", "frobnicate", ""}) {
    const auto r = run_command(bench() + " " + args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.output;
    EXPECT_THAT(r.output, HasSubstr("axon-bench")) << args;
  }
  const auto help = run_command(bench() + " collectives --help");
  EXPECT_EQ(help.code, 0) << help.output;
  EXPECT_THAT(help.stdout_text, HasSubstr("--max-bytes"));
}

TEST(AxonBench, UsageErrorsUnderMpirunExitTwoOnEveryRankWithOneMessage) {
  AXON_REQUIRE_MPI();
  const auto r = run_command(mpirun(2, "collectives --root 5 -b 8 -e 8"));
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("--root 5: not a rank of this world of 2"));
}

TEST(AxonBench, TrainReportsThroughputAndTheCommunicationShare) {
  AXON_REQUIRE_MPI();
  const auto r = run_command(mpirun(2, "train --model mlp --samples 1024 --batch-size 64 --threads 1 --json "
                                       "--baseline-samples-per-s 1000"));
  ASSERT_EQ(r.code, 0) << r.output;
  const auto rows = json_lines(r.stdout_text);
  ASSERT_EQ(rows.size(), 1u) << r.output;
  const auto& row = rows[0];
  EXPECT_EQ(row["ranks"], 2);
  EXPECT_EQ(row["global_batch"], 128);
  EXPECT_EQ(row["samples"], 1024);
  EXPECT_GT(row["samples_per_s"].get<double>(), 0.0);
  EXPECT_NEAR(row["speedup"].get<double>(), row["samples_per_s"].get<double>() / 1000, 1e-3);
  EXPECT_NEAR(row["efficiency"].get<double>(), row["speedup"].get<double>() / 2, 1e-3);
  // Every step all-reduces the gradient: 8 steps per rank, each inside the timed collectives.
  EXPECT_GE(row["grad_collectives"].get<int>(), 8);
  EXPECT_GT(row["comm_share"].get<double>(), 0.0);
  EXPECT_LT(row["comm_share"].get<double>(), 1.0);
  EXPECT_GE(row["comm_share_max"].get<double>(), row["comm_share"].get<double>());
}
