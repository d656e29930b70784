// Whole jobs under axonrun: how a job ends when its ranks succeed or one of them fails.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <string>

using ::testing::HasSubstr;

struct Result {
  int code;
  std::string output;
  double seconds;
};

static Result run(const std::string& command) {
  const auto start = std::chrono::steady_clock::now();
  std::string out;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return {-1, "popen failed", 0};
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), pipe)) out.append(buf.data(), n);
  int status = pclose(pipe);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), out, seconds};
}

static std::string job(const std::string& args) {
  return std::string(AXON_BIN_DIR) + "/axonrun -n 2 " + AXON_BIN_DIR + "/rank_exit " + args;
}

TEST(Jobs, RanksThatSucceedFinalizeAndExitZero) {
  Result r = run(job("0"));
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("rank 0: sum 2"));
  EXPECT_THAT(r.output, HasSubstr("rank 1: sum 2"));
}

TEST(Jobs, ARankReturningAnErrorStopsTheJobInsteadOfHanging) {
  // Rank 1 returns 3 from main while rank 0 waits in an all-reduce: the job must end, say which
  // rank failed, and fail.
  Result r = run(job("3"));
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("rank 1 is exiting with status 3"));
  EXPECT_THAT(r.output, HasSubstr("axonrun: job failed"));
  EXPECT_LT(r.seconds, 60.0) << r.output;
}
