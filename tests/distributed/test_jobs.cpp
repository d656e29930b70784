// Whole jobs under axonrun: how a job ends when its ranks succeed or one of them fails.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "../support/process.h"

using ::testing::HasSubstr;

using Result = axon::testing::CommandResult;
using axon::testing::run_command;

static std::string job(const std::string& args) {
  return std::string(AXON_BIN_DIR) + "/axonrun -n 2 " + AXON_BIN_DIR + "/rank_exit " + args;
}

TEST(Jobs, RanksThatSucceedFinalizeAndExitZero) {
  Result r = run_command(job("0"));
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("rank 0: sum 2"));
  EXPECT_THAT(r.output, HasSubstr("rank 1: sum 2"));
}

TEST(Jobs, ARankReturningAnErrorStopsTheJobInsteadOfHanging) {
  // Rank 1 returns 3 from main while rank 0 waits in an all-reduce: the job must end, say which
  // rank failed, and fail.
  Result r = run_command(job("3"));
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("rank 1 is exiting with status 3"));
  EXPECT_THAT(r.output, HasSubstr("axonrun: job failed"));
  EXPECT_LT(r.seconds, 60.0) << r.output;
}

TEST(Jobs, MismatchedCollectiveCountsUnderDistributedDebugAreAnErrorOnEveryRank) {
  // Rank 0 all-reduces 4 floats, rank 1 five: with AXON_DISTRIBUTED_DEBUG=1 both ranks fail with
  // a message naming both calls, before MPI can write 5 values into a 4-value buffer.
  Result r = run_command("AXON_DISTRIBUTED_DEBUG=1 timeout -k 10 90 " + std::string(AXON_BIN_DIR) + "/axonrun -n 2 " +
                         AXON_BIN_DIR + "/collective_mismatch");
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_NE(r.code, 124) << "the job hung:\n" << r.output;
  EXPECT_THAT(r.output, HasSubstr("collective mismatch (AXON_DISTRIBUTED_DEBUG) at call 1 of rank 0"));
  EXPECT_THAT(r.output, HasSubstr("collective mismatch (AXON_DISTRIBUTED_DEBUG) at call 1 of rank 1"));
  EXPECT_THAT(r.output, HasSubstr("rank 0 calls allreduce(float, sum) of 4 elements, rank 1 calls allreduce(float, sum) of 5 elements"));
  EXPECT_THAT(r.output, ::testing::Not(HasSubstr("reduced")));
  EXPECT_LT(r.seconds, 60.0) << r.output;
}
