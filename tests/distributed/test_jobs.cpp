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
