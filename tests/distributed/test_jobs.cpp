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

// ---- faults: a rank killed, a rank that throws, ranks that hang (tests/distributed/rank_fault.cpp) --

namespace {

struct FaultRun {
  Result result;
  bool left_behind = false;  // a process of the job still ran after axonrun returned
};

// `axonrun <options> rank_fault <fault>`, every process tagged with a unique marker, bounded by
// timeout(1). Afterwards no process of the job may be left (checked at once: axonrun reaps its
// ranks before it returns; any found are killed so the next test starts clean).
FaultRun run_fault(const std::string& name, const std::string& options, const std::string& fault) {
  static int count = 0;
  const std::string marker = "fault-" + name + "-" + std::to_string(::getpid()) + "-" + std::to_string(++count);
  FaultRun run;
  run.result = run_command("AXON_TEST_JOB=" + marker + " timeout -k 10 120 " + AXON_BIN_DIR + "/axonrun " + options +
                           " " + AXON_BIN_DIR + "/rank_fault " + fault);
  run.left_behind = !axon::testing::job_gone_within(marker, std::chrono::milliseconds(500));
  return run;
}

}  // namespace

TEST(JobFaults, ARankKilledWithSigkillEndsTheJobNamingIt) {
  // Rank 1 of 3 is killed with SIGKILL while the others wait for it in an all-reduce.
  FaultRun run = run_fault("kill", "-n 3", "kill 1");
  const Result& r = run.result;
  EXPECT_EQ(r.code, 128 + 9) << r.output;
  EXPECT_THAT(r.output, HasSubstr("axonrun: job failed with exit code 137: rank 1 (pid "));
  EXPECT_THAT(r.output, HasSubstr(") failed first: killed by signal 9 (SIGKILL); its output is above"));
  EXPECT_LT(r.seconds, 30.0) << r.output;
  EXPECT_FALSE(run.left_behind) << "a process of the job outlived axonrun:\n" << r.output;
}

TEST(JobFaults, ARankThatThrowsEndsTheJobNamingIt) {
  // An exception nobody catches: std::terminate, SIGABRT, no exit handler runs.
  FaultRun run = run_fault("throw", "-n 2", "throw 1");
  const Result& r = run.result;
  EXPECT_EQ(r.code, 128 + 6) << r.output;
  EXPECT_THAT(r.output, HasSubstr("rank_fault: simulated uncaught exception"));
  EXPECT_THAT(r.output, HasSubstr(") failed first: killed by signal 6 (SIGABRT)"));
  EXPECT_THAT(r.output, HasSubstr("axonrun: job failed with exit code 134: rank 1 (pid "));
  EXPECT_LT(r.seconds, 30.0) << r.output;
  EXPECT_FALSE(run.left_behind) << r.output;
}

TEST(JobFaults, ARankThatReturnsAnErrorIsNamedWithItsStatus) {
  Result r = run_command(std::string(AXON_BIN_DIR) + "/axonrun -n 2 --tag-output " + AXON_BIN_DIR + "/rank_exit 5");
  EXPECT_EQ(r.code, 5) << r.output;
  EXPECT_THAT(r.output, HasSubstr("[1,1]<stderr>:rank 1: simulated failure"));
  EXPECT_THAT(r.output, HasSubstr(") failed first: exit status 5; its output is above, tagged with its rank (2 ranks, command: "));
}

TEST(JobFaults, ARankHungOutsideACollectiveIsNamedByTheWatchdog) {
  // Rank 1 sleeps; ranks 0 and 2 wait for it in their fourth all-reduce.
  FaultRun run = run_fault("hang-outside", "-n 3 --timeout 4", "hang-outside 1");
  const Result& r = run.result;
  EXPECT_EQ(r.code, 124) << r.output;
  EXPECT_THAT(r.output, HasSubstr("axonrun: watchdog: no rank has entered or left a collective for "));
  EXPECT_THAT(r.output, ::testing::ContainsRegex(
                            "axonrun: watchdog: rank 1 \\(pid [0-9]+, host [^)]+\\) is stuck outside a collective: its "
                            "last, collective #3 \\(allreduce\\), ended [0-9.]+ s ago"));
  EXPECT_THAT(r.output, ::testing::ContainsRegex("rank 0 \\(pid [0-9]+, host [^)]+\\) waits inside collective #4 \\(allreduce\\)"));
  EXPECT_THAT(r.output, ::testing::ContainsRegex("rank 2 \\(pid [0-9]+, host [^)]+\\) waits inside collective #4 \\(allreduce\\)"));
  EXPECT_THAT(r.output, HasSubstr("axonrun: job stopped by the watchdog: rank 1 is stuck (no progress for 4 s); exit code 124"));
  EXPECT_LT(r.seconds, 15.0) << r.output;
  EXPECT_FALSE(run.left_behind) << r.output;
}

TEST(JobFaults, RanksHungInsideMismatchedCollectivesAreAllNamed) {
  // Rank 0 enters a barrier, rank 1 an all-reduce: neither can complete.
  FaultRun run = run_fault("mismatch", "-n 2 --timeout 4", "mismatch");
  const Result& r = run.result;
  EXPECT_EQ(r.code, 124) << r.output;
  EXPECT_THAT(r.output, HasSubstr("is stuck inside collective #4 (barrier)"));
  EXPECT_THAT(r.output, HasSubstr("is stuck inside collective #4 (allreduce)"));
  EXPECT_THAT(r.output, HasSubstr("every rank is inside a collective that cannot complete"));
  EXPECT_THAT(r.output, HasSubstr("axonrun: job stopped by the watchdog: ranks 0 and 1 are stuck"));
  EXPECT_LT(r.seconds, 15.0) << r.output;
  EXPECT_FALSE(run.left_behind) << r.output;
}

TEST(JobFaults, AStoppedRankIsNamedAndNoProcessIsLeft) {
  // SIGSTOP: the rank cannot even answer SIGTERM; the watchdog kills it with SIGKILL.
  FaultRun run = run_fault("stop", "-n 2 --timeout 4", "stop 1");
  const Result& r = run.result;
  EXPECT_EQ(r.code, 124) << r.output;
  EXPECT_THAT(r.output, HasSubstr("axonrun: job stopped by the watchdog: rank 1 is stuck"));
  EXPECT_LT(r.seconds, 15.0) << r.output;
  EXPECT_FALSE(run.left_behind) << r.output;
}

TEST(JobFaults, TheDefaultTimeoutEndsAHungJobWithin30Seconds) {
  FaultRun run = run_fault("default-timeout", "-n 2", "hang-outside 1");
  const Result& r = run.result;
  EXPECT_EQ(r.code, 124) << r.output;
  EXPECT_THAT(r.output, HasSubstr("(--timeout 25)"));
  EXPECT_THAT(r.output, HasSubstr("rank 1 is stuck"));
  EXPECT_LT(r.seconds, 30.0) << r.output;
  EXPECT_FALSE(run.left_behind) << r.output;
}

TEST(JobFaults, TimeoutZeroTurnsTheWatchdogOff) {
  // The hung job then runs until timeout(1) stops it: the watchdog did not.
  Result r = run_command("timeout -k 5 8 " + std::string(AXON_BIN_DIR) + "/axonrun -n 2 --timeout 0 " + AXON_BIN_DIR +
                         "/rank_fault hang-outside 1");
  EXPECT_EQ(r.code, 124) << r.output;
  EXPECT_THAT(r.output, ::testing::Not(HasSubstr("watchdog")));
}

// Without axonrun (bare mpirun, srun): AXON_COLLECTIVE_TIMEOUT makes a rank that has waited that
// long inside one collective exit with 124, naming the collective, and the launcher ends the job.
TEST(JobFaults, CollectiveTimeoutEndsAHungJobUnderBareMpirun) {
  static int count = 0;
  const std::string marker = "collective-timeout-" + std::to_string(::getpid()) + "-" + std::to_string(++count);
  Result r = run_command("AXON_TEST_JOB=" + marker + " AXON_COLLECTIVE_TIMEOUT=3 timeout -k 10 60 mpirun -np 2 " +
                         AXON_BIN_DIR + "/rank_fault hang-outside 1");
  EXPECT_EQ(r.code, 124) << r.output;
  EXPECT_THAT(r.output, ::testing::ContainsRegex(
                            "axon: rank 0 \\(pid [0-9]+, host [^)]+\\): collective #4 \\(allreduce\\) has waited 3.[0-9] s "
                            "for the other ranks \\(AXON_COLLECTIVE_TIMEOUT=3\\); exiting with status 124"));
  EXPECT_LT(r.seconds, 20.0) << r.output;
  EXPECT_TRUE(axon::testing::job_gone_within(marker, std::chrono::milliseconds(5000))) << r.output;

  Result bad = run_command("AXON_COLLECTIVE_TIMEOUT=soon timeout -k 10 60 mpirun -np 2 " + std::string(AXON_BIN_DIR) +
                           "/rank_exit 0");
  EXPECT_NE(bad.code, 0) << bad.output;
  EXPECT_THAT(bad.output, HasSubstr("AXON_COLLECTIVE_TIMEOUT='soon' is not a number of seconds > 0"));
}
