// Jobs that survive: axonrun --max-restarts (a killed rank, the job restarted, resumed from its
// newest checkpoint, the same parameters as an uninterrupted run), SIGTERM to axonrun as
// preemption, and ranks that meet through the TCP store with torchrun-style variables alone.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "../support/process.h"
#include "../support/require_mpi.h"

using ::testing::HasSubstr;
using ::testing::Not;
using Result = axon::testing::CommandResult;
using axon::testing::run_command;
namespace fs = std::filesystem;

namespace {

std::string bin(const std::string& name) { return std::string(AXON_BIN_DIR) + "/" + name; }

nlohmann::json last_json_line(const std::string& text) {
  std::istringstream lines(text);
  std::string line, last;
  while (std::getline(lines, line))
    if (line.starts_with("{")) last = line;
  if (last.empty()) return nlohmann::json::object();
  return nlohmann::json::parse(last);
}

size_t count(const std::string& text, const std::string& part) {
  size_t n = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + part.size())) ++n;
  return n;
}

class Survival : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("axon-survival-" + std::string(info->name()) + "-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    static int n = 0;
    marker_ = "survival-" + std::to_string(::getpid()) + "-" + std::to_string(++n);
  }
  void TearDown() override {
    EXPECT_TRUE(axon::testing::job_gone_within(marker_, std::chrono::milliseconds(1000)))
        << "a process of the job outlived it";
    fs::remove_all(dir_);
  }
  // Every process of the job carries AXON_TEST_JOB=marker_ (see job_processes).
  std::string tagged(const std::string& command) const { return "export AXON_TEST_JOB=" + marker_ + "; " + command; }

  fs::path dir_;
  std::string marker_;
};

// A small run: 640 synthetic samples, 8 per rank per step, 3 epochs of 40 steps on 2 ranks: long
// enough that a kill or signal sent once step 5 is checkpointed lands mid-run, even on a busy machine.
const std::string kTraining = " --no-progress --batch-size 8 --threads 1 --seed 3 --synthetic 640 --epochs 3";

// A free TCP port for a store: one the kernel picks, released again (the kernel does not hand it
// out again at once, so a clash with another process is unlikely).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ADD_FAILURE() << "cannot pick a free port";
  }
  if (fd >= 0) ::close(fd);
  return ntohs(addr.sin_port);
}

}  // namespace

// ---- axonrun --max-restarts -------------------------------------------------------------------

// Rank 1 is killed (SIGKILL) in the first start, once the first checkpoint (step 5) exists; axonrun
// starts the job again, which resumes from its newest valid checkpoint (--resume auto) and ends
// with exactly the parameters of a run that was never interrupted.
TEST_F(Survival, AKilledRankIsRestartedAndTheResumedJobMatchesAnUninterruptedRun) {
  AXON_REQUIRE_MPI();
  Result straight = run_command(bin("axonrun") + " -n 2 " + bin("fashion_mnist") + kTraining);
  ASSERT_EQ(straight.code, 0) << straight.output;

  const std::string ck = (dir_ / "ck").string();
  const std::string wrapper = (dir_ / "rank.sh").string();
  {
    std::ofstream out(wrapper);
    out << "#!/bin/sh\n"
           "# The first start's rank 1 dies of SIGKILL once the first checkpoint exists ($$ is this\n"
           "# shell, which exec turns into fashion_mnist).\n"
           "if [ \"$AXON_RESTART_COUNT\" = 0 ] && [ \"$OMPI_COMM_WORLD_RANK\" = 1 ]; then\n"
           "  ( for i in $(seq 600); do [ -d " << ck << "/step-000000005 ] && break; sleep 0.02; done; kill -9 $$ ) &\n"
           "fi\n"
           "exec " << bin("fashion_mnist") << " \"$@\"\n";
  }
  ::chmod(wrapper.c_str(), 0755);
  Result r = run_command(tagged("timeout -k 5 120 " + bin("axonrun") + " -n 2 --max-restarts 1 " + wrapper + kTraining +
                                " --checkpoint-dir " + ck + " --checkpoint-every 5 --resume auto"));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("failed first: killed by signal 9 (SIGKILL)"));
  EXPECT_EQ(count(r.output, "axonrun: restarting the job (restart 1 of 1, AXON_RESTART_COUNT=1)"), 1u) << r.output;
  EXPECT_THAT(r.output, HasSubstr("axonrun: job succeeded after 1 restart"));
  const nlohmann::json a = last_json_line(straight.stdout_text), b = last_json_line(r.stdout_text);
  ASSERT_FALSE(b["resumed_from"].is_null()) << r.output;
  EXPECT_THAT(b["resumed_from"].get<std::string>(), HasSubstr(ck + "/step-"));
  EXPECT_EQ(b["params_sha256"], a["params_sha256"]) << r.output;
  EXPECT_EQ(b["train_loss"], a["train_loss"]);
  EXPECT_EQ(b["global_step"], a["global_step"]);
}

// Every start fails: axonrun gives up after K restarts with the last failure's exit code and a
// summary saying how many restarts it tried; no process of any start is left.
TEST_F(Survival, WhenEveryRestartFailsTheLastFailureIsTheJobsAndSaysHowManyWereTried) {
  AXON_REQUIRE_MPI();
  Result r = run_command(tagged("timeout -k 5 120 " + bin("axonrun") + " -n 2 --max-restarts 2 " + bin("rank_fault") + " kill 1"));
  EXPECT_EQ(r.code, 137) << r.output;
  EXPECT_EQ(count(r.output, "axonrun: restarting the job (restart "), 2u) << r.output;
  EXPECT_THAT(r.output, HasSubstr("restart 2 of 2, AXON_RESTART_COUNT=2"));
  EXPECT_THAT(r.output, HasSubstr("axonrun: job failed with exit code 137: rank 1 (pid "));
  EXPECT_THAT(r.output, HasSubstr("; gave up after 2 restarts (3 starts, --max-restarts 2)"));
  EXPECT_LT(r.seconds, 60.0) << r.output;
}

// Ctrl-C while a job keeps failing and restarting ends the sequence: no further start.
TEST_F(Survival, ASignalToAxonrunEndsTheRestarts) {
  AXON_REQUIRE_MPI();
  Result r = run_command(tagged("( timeout -k 5 120 " + bin("axonrun") + " -n 2 --max-restarts 1000 " + bin("rank_fault") +
                                " kill 1 & sleep 3; kill -INT $!; wait $! )"));
  EXPECT_EQ(r.code, 130) << r.output;
  EXPECT_GE(count(r.output, "axonrun: restarting the job"), 1u) << r.output;
  EXPECT_THAT(r.output, HasSubstr("SIGINT (sent to axonrun)"));
  EXPECT_LT(r.seconds, 30.0) << r.output;
}

TEST(AxonrunRestarts, BadValuesAreUsageErrors) {
  for (const char* value : {"-1", "x", "", "10001"}) {
    Result r = run_command(bin("axonrun") + " -n 1 --max-restarts=" + value + " /bin/true");
    EXPECT_EQ(r.code, 2) << value << "\n" << r.output;
    EXPECT_THAT(r.output, HasSubstr("--max-restarts expects a number of restarts from 0 to 10000")) << value;
  }
  Result r = run_command(bin("axonrun") + " -n 1 --term-timeout -3 /bin/true");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("--term-timeout expects seconds"));
}

// ---- SIGTERM to axonrun: preemption ------------------------------------------------------------

// SIGTERM to axonrun (what a cluster sends to preempt or cancel a job) reaches every rank: they
// write a checkpoint at the same step and exit 4, and so does axonrun; --resume auto then ends
// with the parameters of an uninterrupted run.
TEST_F(Survival, SigtermToAxonrunCheckpointsEveryRankAndTheResumedRunMatches) {
  AXON_REQUIRE_MPI();
  const std::string ck = (dir_ / "term").string();
  const std::string job = bin("axonrun") + " -n 2 " + bin("fashion_mnist") + kTraining + " --checkpoint-dir " + ck;
  Result r = run_command(tagged("( " + job + " --checkpoint-every 5 & for i in $(seq 600); do [ -d " + ck +
                                "/step-000000005 ] && break; sleep 0.02; done; kill -TERM $!; wait $! )"));
  EXPECT_EQ(r.code, 4) << r.output;
  EXPECT_EQ(count(r.output, "fashion_mnist: preempted by signal 15"), 1u) << r.output;
  EXPECT_THAT(r.output, HasSubstr("axonrun: SIGTERM: asking the job to write a checkpoint and stop (passed on to every rank)"));
  EXPECT_THAT(r.output, HasSubstr("axonrun: job preempted by SIGTERM (passed on to the ranks): the ranks wrote a checkpoint and exited 4"));
  EXPECT_THAT(r.output, Not(HasSubstr("params_sha256")));
  EXPECT_THAT(r.output, Not(HasSubstr("MPI_ABORT")));
  Result straight = run_command(bin("axonrun") + " -n 2 " + bin("fashion_mnist") + kTraining);
  ASSERT_EQ(straight.code, 0) << straight.output;
  Result resumed = run_command(job + " --resume auto");
  ASSERT_EQ(resumed.code, 0) << resumed.output;
  const nlohmann::json a = last_json_line(straight.stdout_text), b = last_json_line(resumed.stdout_text);
  EXPECT_FALSE(b["resumed_from"].is_null());
  EXPECT_EQ(b["params_sha256"], a["params_sha256"]);
}

// Ranks that ignore the request (rank_fault, an Axon program, started with SIGTERM and SIGUSR1
// ignored): after --term-timeout, axonrun stops the job itself (exit 143); a second SIGTERM does
// so at once. Programs that are not Axon's (no heartbeat: they know nothing of checkpoints) are
// stopped by the first SIGTERM, as before (Axonrun/StopSignal in test_launcher.cpp).
TEST_F(Survival, AJobThatDoesNotStopAfterSigtermIsStoppedByTheTermTimeoutOrASecondSigterm) {
  AXON_REQUIRE_MPI();
  const std::string stubborn = " -n 2 sh -c 'trap \"\" TERM USR1; exec " + bin("rank_fault") + " hang-outside 1'";
  // Started once rank 0 has printed "rank 0 ready" (both ranks have made collectives).
  auto after_ready = [&](const std::string& axonrun_options, const std::string& signals) {
    const std::string out = (dir_ / "out").string();
    return run_command(tagged("( " + bin("axonrun") + axonrun_options + stubborn + " > " + out + " & for i in $(seq 600); do "
                              "grep -q 'rank 0 ready' " + out + " 2>/dev/null && break; sleep 0.02; done; " + signals +
                              " wait $! )"));
  };
  Result timed = after_ready(" --term-timeout 1", "kill -TERM $!;");
  EXPECT_EQ(timed.code, 143) << timed.output;
  EXPECT_THAT(timed.output, HasSubstr("axonrun: SIGTERM: asking the job to write a checkpoint and stop (passed on to every rank)"));
  EXPECT_THAT(timed.output, HasSubstr("axonrun: the job did not stop within 1 s after SIGTERM (--term-timeout); stopping it"));
  EXPECT_THAT(timed.output, HasSubstr("axonrun: job stopped by SIGTERM (sent to axonrun, and the job did not stop within --term-timeout)"));
  EXPECT_LT(timed.seconds, 30.0);
  ASSERT_TRUE(axon::testing::job_gone_within(marker_, std::chrono::milliseconds(1000)));

  Result twice = after_ready("", "kill -TERM $!; sleep 0.5; kill -TERM $!;");
  EXPECT_EQ(twice.code, 143) << twice.output;
  EXPECT_THAT(twice.output, HasSubstr("axonrun: SIGTERM: asking the job to write a checkpoint and stop"));
  EXPECT_THAT(twice.output, HasSubstr("axonrun: job stopped by SIGTERM (sent to axonrun); exit code 143"));
  EXPECT_LT(twice.seconds, 30.0);
}

// ---- rendezvous without MPI: the TCP store ------------------------------------------------------

#ifdef AXON_HAS_TCP_STORE
namespace {

// `world` ranks of `program`, started by a shell loop with torchrun-style variables only (the
// launcher variables of the test's own environment removed), each rank's output in dir/rank-R.
// Returns the shell's result; each rank's exit status is in dir/status-R.
Result by_hand(const fs::path& dir, int world, int port, const std::string& program, const std::string& env = "") {
  std::string loop = "for r in $(seq 0 " + std::to_string(world - 1) + "); do ( env -u OMPI_COMM_WORLD_RANK -u OMPI_COMM_WORLD_SIZE "
                     "-u PMIX_RANK -u SLURM_STEP_ID -u PMI_RANK " + env + " RANK=$r WORLD_SIZE=" + std::to_string(world) +
                     " LOCAL_RANK=$r LOCAL_WORLD_SIZE=" + std::to_string(world) + " MASTER_ADDR=127.0.0.1 MASTER_PORT=" +
                     std::to_string(port) + " timeout -k 5 60 " + program + " > " + dir.string() + "/rank-$r 2>&1; echo $? > " +
                     dir.string() + "/status-$r ) & done; wait";
  return run_command(loop);
}

std::string slurp(const fs::path& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

int status_of(const fs::path& dir, int rank) {
  std::string text = slurp(dir / ("status-" + std::to_string(rank)));
  return text.empty() ? -1 : std::stoi(text);
}

}  // namespace

TEST_F(Survival, ThreeRanksStartedByHandMeetThroughTheTcpStoreAndComputeTheCollectives) {
  Result r = by_hand(dir_, 3, free_port(), bin("tcp_collectives"), "AXON_TEST_JOB=" + marker_);
  for (int rank = 0; rank < 3; ++rank) {
    const std::string out = slurp(dir_ / ("rank-" + std::to_string(rank)));
    EXPECT_EQ(status_of(dir_, rank), 0) << out;
    // Sum of (r + 1) and of -r, max and min of (r / 2, 10 - r), rank 2's floats, rank 0's text,
    // the mean of 3r, and 10r gathered in rank order.
    EXPECT_THAT(out, HasSubstr("rank " + std::to_string(rank) +
                               " of 3 (tcp): sum 6 -3 max 1 10 min 0 8 bcast 7.5 2.25 'hello from 0' avg 3 gather 0 10 20"));
  }
}

// fashion_mnist on 3 ranks through the TCP store ends with the parameters of the same run under
// mpirun (the gradients are summed in rank order, as Open MPI does for these sizes; for 2 ranks
// the sum is the same in any order).
TEST_F(Survival, FashionMnistThroughTheTcpStoreMatchesMpirun) {
  AXON_REQUIRE_MPI();
  const std::string args = " --no-progress --batch-size 16 --threads 1 --seed 3 --synthetic 512 --epochs 2";
  Result mpi = run_command("mpirun -np 3 --oversubscribe --bind-to none " + bin("fashion_mnist") + args);
  ASSERT_EQ(mpi.code, 0) << mpi.output;
  by_hand(dir_, 3, free_port(), bin("fashion_mnist") + args, "AXON_TEST_JOB=" + marker_);
  for (int rank = 0; rank < 3; ++rank)
    EXPECT_EQ(status_of(dir_, rank), 0) << slurp(dir_ / ("rank-" + std::to_string(rank)));
  const nlohmann::json a = last_json_line(mpi.stdout_text), b = last_json_line(slurp(dir_ / "rank-0"));
  EXPECT_EQ(b["backend"], "tcp");
  EXPECT_EQ(b["world_size"], 3);
  EXPECT_EQ(b["params_sha256"], a["params_sha256"]);
  EXPECT_EQ(b["train_loss"], a["train_loss"]);
}

TEST_F(Survival, ARankThatNeverShowsUpIsNamedWithinTheStoreTimeout) {
  // Ranks 0 and 1 of 3 start; rank 2 never does.
  const int port = free_port();
  const std::string loop = "for r in 0 1; do ( env -u OMPI_COMM_WORLD_RANK -u OMPI_COMM_WORLD_SIZE -u PMIX_RANK AXON_TEST_JOB=" + marker_ + " AXON_STORE_TIMEOUT=2 "
                           "RANK=$r WORLD_SIZE=3 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port) +
                           " timeout -k 5 60 " + bin("tcp_collectives") + " > " + dir_.string() + "/rank-$r 2>&1; echo $? > " +
                           dir_.string() + "/status-$r ) & done; wait";
  Result r = run_command(loop);
  EXPECT_LT(r.seconds, 10.0);
  EXPECT_EQ(status_of(dir_, 0), 1);
  EXPECT_EQ(status_of(dir_, 1), 1);
  EXPECT_THAT(slurp(dir_ / "rank-0"),
              HasSubstr("tcp rendezvous at 127.0.0.1:" + std::to_string(port) + ": rank 2 of 3 did not join within 2 s"));
  EXPECT_THAT(slurp(dir_ / "rank-1"), HasSubstr("tcp_collectives: error: tcp rendezvous at 127.0.0.1:"));
}

TEST_F(Survival, ARankThatDiesEndsTheOthersWithAnErrorNamingIt) {
  Result r = by_hand(dir_, 3, free_port(), bin("tcp_collectives") + " die 1", "AXON_TEST_JOB=" + marker_);
  EXPECT_LT(r.seconds, 20.0);
  EXPECT_EQ(status_of(dir_, 1), 128 + 9);
  for (int rank : {0, 2}) {
    const std::string out = slurp(dir_ / ("rank-" + std::to_string(rank)));
    EXPECT_EQ(status_of(dir_, rank), 1) << out;
    EXPECT_THAT(out, HasSubstr("rank 1 of 3 left the job without closing its connection to the store (its process died or "
                               "was killed)"));
  }
}

// Rank 1 all-reduces 3 floats, ranks 0 and 2 two: rank 0 compares the calls, and every rank
// fails with the same message naming both calls (no rank reads past its buffer, none hangs).
TEST_F(Survival, MismatchedCollectivesThroughTheTcpStoreAreAnErrorOnEveryRank) {
  Result r = by_hand(dir_, 3, free_port(), bin("tcp_collectives") + " mismatch", "AXON_TEST_JOB=" + marker_);
  EXPECT_LT(r.seconds, 20.0);
  for (int rank = 0; rank < 3; ++rank) {
    const std::string out = slurp(dir_ / ("rank-" + std::to_string(rank)));
    EXPECT_EQ(status_of(dir_, rank), 1) << out;
    EXPECT_THAT(out, HasSubstr("tcp collective mismatch at call 2: rank 0 calls allreduce(float, sum) of 2 elements, rank 1 "
                               "calls allreduce(float, sum) of 3 elements"))
        << out;
  }
}

// The same in training: rank 1 of 3 is killed (SIGKILL) a second into a long run; ranks 0 and 2
// stop at once with an error naming it instead of waiting for it.
TEST_F(Survival, ATrainingRankKilledMidRunEndsTheOtherRanks) {
  const std::string wrapper = (dir_ / "rank.sh").string();
  {
    std::ofstream out(wrapper);
    out << "#!/bin/sh\n"
           "if [ \"$RANK\" = 1 ]; then ( sleep 1; kill -9 $$ ) & fi\n"
           "exec " << bin("fashion_mnist") << " \"$@\"\n";
  }
  ::chmod(wrapper.c_str(), 0755);
  Result r = by_hand(dir_, 3, free_port(), wrapper + " --no-progress --threads 1 --synthetic 3000 --epochs 1000", "AXON_TEST_JOB=" + marker_);
  EXPECT_LT(r.seconds, 20.0);
  EXPECT_EQ(status_of(dir_, 1), 128 + 9);
  for (int rank : {0, 2}) {
    const std::string out = slurp(dir_ / ("rank-" + std::to_string(rank)));
    EXPECT_EQ(status_of(dir_, rank), 1) << out;
    EXPECT_THAT(out, HasSubstr("fashion_mnist: error: rank " + std::to_string(rank) + ": tcp allreduce(")) << out;
    EXPECT_THAT(out, HasSubstr("rank 1 of 3 left the job without closing its connection to the store")) << out;
  }
}
#endif
