// Runs the real axonrun binary (with the real mpirun) and checks what it prints and returns.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "../support/process.h"

extern char** environ;

namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;
using axon::testing::job_gone_within;
using axon::testing::job_processes;

const std::string kAxonrun = std::string(AXON_BIN_DIR) + "/axonrun";

// Changes to the test's own environment for one axonrun run.
struct EnvChanges {
  std::vector<std::string> unset = {};
  std::vector<std::pair<std::string, std::string>> set = {};
};

struct Result {
  int code = -1;  // exit code; -signo if axonrun itself died by a signal
  std::string out;
  std::string err;
};

// A temporary file that is removed again when the test is done with it.
struct TempFile {
  explicit TempFile(const std::string& contents = "", mode_t mode = 0600) {
    std::string pattern = (fs::temp_directory_path() / "axonrun_test_XXXXXX").string();
    int fd = ::mkstemp(pattern.data());
    if (fd < 0) throw std::runtime_error("mkstemp failed");
    path = pattern;
    if (!contents.empty() && ::write(fd, contents.data(), contents.size()) < 0) throw std::runtime_error("write failed");
    ::fchmod(fd, mode);
    ::close(fd);
  }
  ~TempFile() { ::unlink(path.c_str()); }
  std::string read() const {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }
  std::string path;
};

// A running axonrun whose stdout/stderr go to temporary files.
class Axonrun {
 public:
  Axonrun(const std::vector<std::string>& args, const EnvChanges& changes = {}) {
    std::vector<std::string> env;
    for (char** entry = environ; *entry; ++entry) {
      std::string text = *entry;
      std::string name = text.substr(0, text.find('='));
      // A user's override must not leak into the tests, nor a Slurm allocation that ctest runs in
      // (axonrun would start srun instead of mpirun).
      bool drop = name == "AXON_MPIRUN" || name == "AXON_SRUN" || name == "SLURM_JOB_ID";
      for (const auto& unset : changes.unset) drop = drop || name == unset;
      for (const auto& [key, value] : changes.set) drop = drop || name == key;
      if (!drop) env.push_back(text);
    }
    for (const auto& [key, value] : changes.set) env.push_back(key + "=" + value);

    std::vector<std::string> argv_text = {kAxonrun};
    argv_text.insert(argv_text.end(), args.begin(), args.end());
    std::vector<char*> argv, envp;
    for (auto& arg : argv_text) argv.push_back(arg.data());
    argv.push_back(nullptr);
    for (auto& entry : env) envp.push_back(entry.data());
    envp.push_back(nullptr);

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, out_.path.c_str(), O_WRONLY | O_TRUNC, 0);
    posix_spawn_file_actions_addopen(&actions, 2, err_.path.c_str(), O_WRONLY | O_TRUNC, 0);
    // Default dispositions for the signals under test: a shell that ran us in the background
    // may have left SIGINT/SIGQUIT ignored, and axonrun keeps ignoring what it inherits ignored.
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t defaults;
    sigemptyset(&defaults);
    for (int signo : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2}) sigaddset(&defaults, signo);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF);
    int rc = ::posix_spawn(&pid_, kAxonrun.c_str(), &actions, &attr, argv.data(), envp.data());
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) throw std::runtime_error("cannot start " + kAxonrun + ": " + std::strerror(rc));
  }

  ~Axonrun() {
    if (pid_ > 0) {  // only after a failed test: do not leave it running
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }

  pid_t pid() const { return pid_; }
  std::string out_so_far() const { return out_.read(); }
  std::string err_so_far() const { return err_.read(); }

  // Waits for axonrun to end; a run that outlives the timeout is killed and fails the test.
  Result wait(std::chrono::seconds timeout = 120s) {
    Result result;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    int status = 0;
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        ADD_FAILURE() << "axonrun did not finish within " << timeout.count() << " s";
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(20ms);
    }
    pid_ = -1;
    result.code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
    result.out = out_.read();
    result.err = err_.read();
    return result;
  }

 private:
  TempFile out_, err_;
  pid_t pid_ = -1;
};

Result run(const std::vector<std::string>& args, const EnvChanges& changes = {}) {
  return Axonrun(args, changes).wait();
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

int online_cpus() { return static_cast<int>(::sysconf(_SC_NPROCESSORS_ONLN)); }

// The Cpus_allowed_list line(s) of /proc/<self>/status, as in `grep Cpus_allowed_list`.
std::string own_cpus_allowed() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.starts_with("Cpus_allowed_list:")) return line + "\n";
  }
  return "";
}

// Open MPI's box rule: 74 dashes.
const std::string kRule(74, '-');

// ---- running jobs -------------------------------------------------------------

TEST(Axonrun, SuccessfulJobReturnsZero) {
  Result r = run({"-n", "2", "/bin/true"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_FALSE(contains(r.err, "axonrun:")) << r.err;
}

TEST(Axonrun, FailingJobReturnsItsExitCode) {
  Result r = run({"-n", "2", "sh", "-c", "exit 3"});
  EXPECT_EQ(r.code, 3);
  EXPECT_TRUE(contains(r.err, "axonrun: job failed with exit code 3 (2 ranks, command: sh -c 'exit 3')")) << r.err;
}

TEST(Axonrun, RanksSeeTheirMpiEnvironment) {
  Result r = run({"-n", "2", "sh", "-c", "echo rank=$OMPI_COMM_WORLD_RANK size=$OMPI_COMM_WORLD_SIZE launcher=$AXON_LAUNCHER"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "rank=0 size=2 launcher=axonrun")) << "out: " << r.out << "\nerr: " << r.err;
  EXPECT_TRUE(contains(r.out, "rank=1 size=2 launcher=axonrun")) << "out: " << r.out << "\nerr: " << r.err;
}

TEST(Axonrun, ProgramArgumentsPassThroughUntouched) {
  // Words that look like axonrun options belong to the program once it is named.
  Result r = run({"-n", "1", "--", "printf", "%s|", "a", "b c", "-n", "--dry-run", "--help", "it's"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "a|b c|-n|--dry-run|--help|it's|");
}

TEST(Axonrun, MoreRanksThanCoresOversubscribe) {
  const int ranks = online_cpus() + 1;
  Result dry = run({"-n", std::to_string(ranks), "--dry-run", "/bin/true"});
  ASSERT_EQ(dry.code, 0) << dry.err;
  EXPECT_TRUE(contains(dry.out, " -np " + std::to_string(ranks) + " --oversubscribe --bind-to none /bin/true\n"))
      << dry.out;

  Result fits = run({"-n", "1", "--dry-run", "/bin/true"});
  EXPECT_FALSE(contains(fits.out, "--oversubscribe")) << fits.out;
  EXPECT_TRUE(contains(fits.out, " -np 1 --bind-to none /bin/true\n")) << fits.out;

  if (ranks > 17) GTEST_SKIP() << "not starting " << ranks << " real ranks";
  // Without the test environment's MCA override, so axonrun's own flag is what lets it run.
  Result real = run({"-n", std::to_string(ranks), "/bin/true"}, {.unset = {"OMPI_MCA_rmaps_base_oversubscribe"}});
  EXPECT_EQ(real.code, 0) << real.err;
}

// mpirun binds each rank to one core by default when ranks <= cores; Axon ranks run
// multi-threaded BLAS on the CPUs they may use, so axonrun starts them unbound.
TEST(Axonrun, RanksKeepTheLaunchersCpus) {
  const std::string parent = own_cpus_allowed();
  ASSERT_FALSE(parent.empty()) << "no Cpus_allowed_list in /proc/self/status";
  Result one = run({"-n", "1", "--", "grep", "Cpus_allowed_list", "/proc/self/status"});
  ASSERT_EQ(one.code, 0) << one.err;
  EXPECT_EQ(one.out, parent);

  Result two = run({"-n", "2", "--", "grep", "Cpus_allowed_list", "/proc/self/status"});
  ASSERT_EQ(two.code, 0) << two.err;
  EXPECT_EQ(two.out, parent + parent);
}

TEST(Axonrun, RunsAsRootWithoutUserSettingOmpiVariables) {
  if (::geteuid() != 0) GTEST_SKIP() << "not running as root";
  Result r = run({"-n", "2", "sh", "-c", "echo ok"},
                 {.unset = {"OMPI_ALLOW_RUN_AS_ROOT", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"}});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "ok\nok\n");
}

// ---- signals --------------------------------------------------------------------

TEST(Axonrun, RankKilledBySignalGivesCleanFailure) {
  Result r = run({"-n", "1", "sh", "-c", "kill -TERM $$"});
  EXPECT_GT(r.code, 0) << "axonrun itself must exit normally; err: " << r.err;
  EXPECT_TRUE(contains(r.err, "axonrun: job failed with exit code")) << r.err;
}

TEST(Axonrun, MpirunKilledBySignalIsReported) {
  TempFile fake_mpirun("#!/bin/sh\nkill -KILL $$\n", 0700);
  Result r = run({"-n", "1", "--mpirun", fake_mpirun.path, "/bin/true"});
  EXPECT_EQ(r.code, 128 + SIGKILL);
  EXPECT_TRUE(contains(r.err, "axonrun: job killed by signal SIGKILL")) << r.err;
}

TEST(Axonrun, ForwardsSigintAndSigtermToTheJob) {
  for (int signo : {SIGINT, SIGTERM}) {
    Axonrun job({"-n", "1", "sh", "-c", "echo started; exec sleep 60"});
    auto deadline = std::chrono::steady_clock::now() + 60s;
    while (!contains(job.out_so_far(), "started") && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(20ms);
    }
    ASSERT_TRUE(contains(job.out_so_far(), "started")) << "the job never started";

    auto sent = std::chrono::steady_clock::now();
    ::kill(job.pid(), signo);
    Result r = job.wait(60s);
    EXPECT_LT(std::chrono::steady_clock::now() - sent, 30s) << "the job outlived signal " << signo;
    EXPECT_GT(r.code, 0) << "axonrun must exit normally with a failure code after signal " << signo
                         << "; err: " << r.err;
  }
}

// A rank that dies of a signal is named with the signal, though Open MPI's banners are filtered.
// Open MPI 4.1 names the rank only some of the time (its notice races with the other ranks'
// exits; then axonrun says so): the job is retried a few times, and the rank must be named at
// least once. AXON_FAKE_MPIRUN_NOTICE below checks the rank line deterministically.
class RankSignal : public ::testing::TestWithParam<int> {};

TEST_P(RankSignal, IsNamedByAxonrun) {
  const int signo = GetParam();
  const std::string name = std::string("SIG") + ::sigabbrev_np(signo);
  const std::string summary = "axonrun: job failed with exit code " + std::to_string(128 + signo) + " (2 ranks, command: sh -c ";
  bool rank_named = false;
  for (int attempt = 0; attempt < 6 && !rank_named; ++attempt) {
    auto start = std::chrono::steady_clock::now();
    // Rank 0 would sleep 30 s: mpirun must stop it once rank 1 is dead.
    Result r = Axonrun({"-n", "2", "sh", "-c",
                        "[ \"$OMPI_COMM_WORLD_RANK\" = 1 ] && kill -" + std::to_string(signo) + " $$; sleep 30"})
                   .wait(60s);
    ASSERT_LT(std::chrono::steady_clock::now() - start, 25s) << "rank 0 outlived the killed rank 1";
    ASSERT_EQ(r.code, 128 + signo) << r.err;
    rank_named = contains(r.err, "axonrun: rank 1 ");
    if (rank_named) {
      EXPECT_TRUE(contains(r.err, " was killed by signal " + std::to_string(signo) + " (" + name + ")\n")) << r.err;
    } else {
      EXPECT_TRUE(contains(r.err, "axonrun: a rank was killed by signal " + std::to_string(signo) + " (" + name +
                                      ") or exited with code " + std::to_string(128 + signo)))
          << r.err;
    }
    for (const char* banner : {"noticed that process rank", "Primary job", "-----------"}) {
      EXPECT_FALSE(contains(r.err, banner)) << "Open MPI banner '" << banner << "' in: " << r.err;
    }
    // The summary stays the last line.
    EXPECT_EQ(r.err.find('\n', r.err.rfind(summary)), r.err.size() - 1) << r.err;
  }
  EXPECT_TRUE(rank_named) << "Open MPI never named the killed rank in 6 runs";
}

// The notice as Open MPI 4.1 prints it, from a stand-in mpirun: always turned into one line.
TEST(Axonrun, OpenMpisSignalNoticeBecomesOneLine) {
  TempFile fake_mpirun("#!/bin/sh\nprintf '%s\\n' '" + kRule +
                           "' 'mpirun noticed that process rank 1 with PID 4242 on node vm exited on signal 9 (Killed).' '" +
                           kRule + "' >&2\nexit 137\n",
                       0700);
  Result r = run({"-n", "2", "--mpirun", fake_mpirun.path, "/bin/true"});
  EXPECT_EQ(r.code, 137);
  EXPECT_TRUE(r.err.starts_with("axonrun: rank 1 (pid 4242) was killed by signal 9 (SIGKILL)\n"
                                "axonrun: job failed with exit code 137 (2 ranks, command: /bin/true)\n"))
      << r.err;
}

INSTANTIATE_TEST_SUITE_P(Axonrun, RankSignal, ::testing::Values(SIGKILL, SIGSEGV, SIGTERM),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return std::string("SIG") + ::sigabbrev_np(info.param);
                         });

// mpirun's stderr goes through axonrun's filter: it must arrive while the job runs, not at the end.
TEST(Axonrun, StderrStreamsWhileTheJobRuns) {
  Axonrun job({"-n", "1", "sh", "-c", "echo started >&2; printf 'partial line' >&2; exec sleep 60"});
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (!contains(job.err_so_far(), "started\npartial line") && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(contains(job.err_so_far(), "started\npartial line")) << "stderr held back: " << job.err_so_far();
  ::kill(job.pid(), SIGTERM);
  Result r = job.wait(60s);
  EXPECT_EQ(r.code, 128 + SIGTERM) << r.err;
}

// Only Open MPI's known banners are dropped: a program's own boxed text and Open MPI's other
// messages pass unchanged.
TEST(Axonrun, OtherBoxedTextPassesUnchanged) {
  const std::string box = kRule + "\nmy own report\n\n  indented line\n" + kRule + "\n";
  Result r = run({"-n", "1", "sh", "-c", "printf '%s' \"$1\" >&2", "sh", box});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, box);
}

// A user who sets OMPI_MCA_orte_execute_quiet gets mpirun's stderr as it is.
TEST(Axonrun, UserChosenQuietSettingIsLeftAlone) {
  Result loud = run({"-n", "2", "sh", "-c", "exit 3"}, {.set = {{"OMPI_MCA_orte_execute_quiet", "0"}}});
  EXPECT_EQ(loud.code, 3);
  EXPECT_TRUE(contains(loud.err, "Primary job")) << loud.err;

  Result quiet = run({"-n", "2", "sh", "-c", "[ \"$OMPI_COMM_WORLD_RANK\" = 1 ] && kill -9 $$; exit 0"},
                     {.set = {{"OMPI_MCA_orte_execute_quiet", "1"}}});
  EXPECT_EQ(quiet.code, 128 + SIGKILL);
  EXPECT_FALSE(contains(quiet.err, "noticed")) << quiet.err;
}

// ---- the job's lifetime and the cause of a stop ----------------------------------------

#ifdef AXON_HAS_RANK_PROGRAM
const std::string kRankProgram = std::string(AXON_BIN_DIR) + "/rank_program";

// A two-rank MPI job that has started and is sleeping, tagged with a unique marker.
struct SleepingJob {
  explicit SleepingJob(const std::string& name)
      : marker(name + "-" + std::to_string(::getpid())),
        job({"-n", "2", kRankProgram, "sleep"}, {.set = {{"AXON_TEST_JOB", marker}}}) {}

  // True once both ranks report ready (bounded).
  bool started() {
    auto deadline = std::chrono::steady_clock::now() + 60s;
    while (std::chrono::steady_clock::now() < deadline) {
      std::string out = job.out_so_far();
      if (contains(out, "rank 0 ready") && contains(out, "rank 1 ready")) return true;
      std::this_thread::sleep_for(20ms);
    }
    return false;
  }

  std::string marker;
  Axonrun job;
};

class StopSignal : public ::testing::TestWithParam<int> {};

// A catchable signal sent to axonrun alone stops every process of the job, and axonrun exits
// 128 + the signal's number with one line naming it: a scheduler can tell a cancel from a crash.
TEST_P(StopSignal, EndsTheWholeJobAndExitsWithTheSignalsCode) {
  const int signo = GetParam();
  const std::string name = std::string("SIG") + ::sigabbrev_np(signo);
  SleepingJob sleeping("stop-" + name);
  ASSERT_TRUE(sleeping.started()) << "the job never started: " << sleeping.job.err_so_far();
  // axonrun, mpirun and two ranks.
  ASSERT_GE(job_processes(sleeping.marker).size(), 4u) << "cannot see the job's processes";

  ::kill(sleeping.job.pid(), signo);
  Result r = sleeping.job.wait(60s);
  EXPECT_EQ(r.code, 128 + signo) << r.err;
  const std::string summary =
      "axonrun: job stopped by " + name + " (sent to axonrun); exit code " + std::to_string(128 + signo) + "\n";
  EXPECT_TRUE(r.err.ends_with(summary)) << "expected the last line to be: " << summary << "err: " << r.err;
  EXPECT_FALSE(contains(r.err, "job failed")) << r.err;
  EXPECT_TRUE(job_gone_within(sleeping.marker, 15s)) << "processes of the job outlived axonrun after " << name;
}

// (SIGUSR1 and SIGUSR2 are passed on to the ranks instead: TinyData.SigUsr1ToAxonrunCheckpointsEveryRank.)
INSTANTIATE_TEST_SUITE_P(Axonrun, StopSignal, ::testing::Values(SIGINT, SIGTERM, SIGHUP, SIGQUIT),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return std::string("SIG") + ::sigabbrev_np(info.param);
                         });

// SIGKILL cannot be caught: the kernel's parent-death signal still stops mpirun and its ranks.
TEST(Axonrun, KilledLauncherTakesItsJobWithIt) {
  SleepingJob sleeping("sigkill");
  ASSERT_TRUE(sleeping.started()) << "the job never started: " << sleeping.job.err_so_far();
  ASSERT_GE(job_processes(sleeping.marker).size(), 4u) << "cannot see the job's processes";

  const pid_t killed = sleeping.job.pid();
  ::kill(killed, SIGKILL);
  Result r = sleeping.job.wait(60s);
  EXPECT_EQ(r.code, -SIGKILL);
  EXPECT_TRUE(job_gone_within(sleeping.marker, 15s)) << "mpirun or ranks outlived a SIGKILLed axonrun";

  // Its heartbeat folder stayed behind; the next axonrun removes it.
  auto leftover = [&] {
    for (const auto& entry : fs::directory_iterator(fs::temp_directory_path()))
      if (entry.path().filename().string().starts_with("axonrun-" + std::to_string(killed) + "-")) return true;
    return false;
  };
  EXPECT_TRUE(leftover()) << "expected the killed axonrun's heartbeat folder";
  Result next = run({"-n", "1", "/bin/true"});
  EXPECT_EQ(next.code, 0) << next.err;
  EXPECT_FALSE(leftover()) << "the next axonrun left the stale heartbeat folder";
}

// Open MPI's banners stay out of the way: the failing rank's own line is there, and axonrun's
// summary is the last line.
TEST(Axonrun, FailingRankMessageIsNotBuriedInBanners) {
  Result r = run({"-n", "2", kRankProgram, "fail", "7"});
  EXPECT_EQ(r.code, 7) << r.err;
  EXPECT_TRUE(contains(r.err, "rank 1: error: simulated failure for the launcher test\n")) << r.err;
  for (const char* banner : {"MPI_ABORT was invoked", "NOTE: invoking MPI_ABORT", "has exited due to",
                             "Primary job", "-----------"}) {
    EXPECT_FALSE(contains(r.err, banner)) << "Open MPI banner '" << banner << "' in: " << r.err;
  }
  // The summary is the last line and names the rank that failed first (from its heartbeat).
  EXPECT_TRUE(r.err.ends_with(") failed first: exit status 7; its output is above (--tag-output marks each line's rank) (2 ranks, "
                              "command: " + kRankProgram + " fail 7)\n"))
      << r.err;
  EXPECT_TRUE(contains(r.err, "axonrun: job failed with exit code 7: rank 1 (pid ")) << r.err;
}
#endif

TEST(Axonrun, NonMpiRankFailureHasNoBanner) {
  Result r = run({"-n", "2", "sh", "-c", "echo 'rank failed: bad input' >&2; exit 3"});
  EXPECT_EQ(r.code, 3);
  EXPECT_TRUE(contains(r.err, "rank failed: bad input")) << r.err;
  EXPECT_FALSE(contains(r.err, "Primary job")) << r.err;
  EXPECT_FALSE(contains(r.err, "-----------")) << r.err;
  EXPECT_TRUE(r.err.ends_with("axonrun: job failed with exit code 3 (2 ranks, command: sh -c 'echo '\\''rank failed: bad input'\\'' >&2; exit 3')\n"))
      << r.err;
}

// ---- command-line errors (exit code 2) ------------------------------------------

TEST(Axonrun, RejectsInvalidRankCounts) {
  for (std::string bad : {"0", "abc", "-3", "2x", "", "99999999999"}) {
    Result r = run({"-n", bad, "/bin/true"});
    EXPECT_EQ(r.code, 2) << "-n '" << bad << "'";
    EXPECT_TRUE(contains(r.err, "axonrun: error: -n expects a positive integer number of ranks, got '" + bad + "'"))
        << r.err;
  }
}

// A typo such as -n 99999 must not start that many processes on one machine.
TEST(Axonrun, RefusesAbsurdRankCountsUnlessAllowed) {
  for (std::string many : {"99999", "4097"}) {
    Result r = run({"-n", many, "--dry-run", "/bin/true"});
    EXPECT_EQ(r.code, 2) << "-n " << many << ": " << r.out;
    EXPECT_TRUE(contains(r.err, "axonrun: error: -n " + many + " is more than ")) << r.err;
    EXPECT_TRUE(contains(r.err, "usable CPU")) << r.err;
    EXPECT_TRUE(contains(r.err, "--allow-many-ranks")) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
  // 64 per usable CPU: with at least one CPU, 64 ranks are always allowed.
  Result fits = run({"-n", "64", "--dry-run", "/bin/true"});
  EXPECT_EQ(fits.code, 0) << fits.err;

  Result allowed = run({"-n", "99999", "--allow-many-ranks", "--dry-run", "/bin/true"});
  EXPECT_EQ(allowed.code, 0) << allowed.err;
  EXPECT_TRUE(contains(allowed.out, " -np 99999 --oversubscribe --bind-to none /bin/true\n")) << allowed.out;
}

TEST(Axonrun, RequiresRankCount) {
  Result r = run({"/bin/true"});
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(contains(r.err, "axonrun: error: missing -n")) << r.err;

  Result dangling = run({"-n"});
  EXPECT_EQ(dangling.code, 2);
  EXPECT_TRUE(contains(dangling.err, "axonrun: error: option -n needs a value")) << dangling.err;
}

TEST(Axonrun, RequiresProgram) {
  for (std::vector<std::string> args : {std::vector<std::string>{"-n", "2"}, {"-n", "2", "--"}}) {
    Result r = run(args);
    EXPECT_EQ(r.code, 2);
    EXPECT_TRUE(contains(r.err, "axonrun: error: missing the program to run")) << r.err;
  }
}

TEST(Axonrun, RejectsUnknownOption) {
  Result r = run({"-n", "2", "--frobnicate", "/bin/true"});
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(contains(r.err, "axonrun: error: unknown option '--frobnicate'")) << r.err;
}

TEST(Axonrun, RejectsMissingProgram) {
  Result on_path = run({"-n", "2", "axon_no_such_program"});
  EXPECT_EQ(on_path.code, 2);
  EXPECT_TRUE(contains(on_path.err, "axonrun: error: program 'axon_no_such_program' not found on PATH")) << on_path.err;

  Result by_path = run({"-n", "2", "/no/such/dir/program"});
  EXPECT_EQ(by_path.code, 2);
  EXPECT_TRUE(contains(by_path.err, "axonrun: error: program '/no/such/dir/program'")) << by_path.err;
}

TEST(Axonrun, RejectsNonExecutableProgram) {
  TempFile plain("not a program\n", 0644);
  Result r = run({"-n", "1", plain.path});
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(contains(r.err, "is not executable")) << r.err;

  Result dir = run({"-n", "1", "/"});
  EXPECT_EQ(dir.code, 2);
  EXPECT_TRUE(contains(dir.err, "is not a regular file")) << dir.err;
}

TEST(Axonrun, ReportsMissingMpirun) {
  fs::path empty_dir = fs::temp_directory_path() / ("axonrun_empty_" + std::to_string(::getpid()));
  fs::create_directories(empty_dir);
  Result r = run({"-n", "2", "/bin/true"}, {.set = {{"PATH", empty_dir.string()}}});
  fs::remove(empty_dir);
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(contains(r.err, "axonrun: error: mpirun not found on PATH")) << r.err;
  EXPECT_TRUE(contains(r.err, "openmpi-bin")) << r.err;

  Result bad = run({"-n", "2", "--mpirun", "/no/such/mpirun", "/bin/true"});
  EXPECT_EQ(bad.code, 2);
  EXPECT_TRUE(contains(bad.err, "mpirun '/no/such/mpirun' (from --mpirun) is not an executable file")) << bad.err;
}

TEST(Axonrun, MpirunThatCannotBeExecutedIsReported) {
  // Executable, but exec fails (no such interpreter): the error comes back from the child.
  TempFile bad_interpreter("#!/no/such/interpreter\n", 0700);
  Result r = run({"-n", "1", "--mpirun", bad_interpreter.path, "/bin/true"});
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(contains(r.err, "axonrun: error: cannot start '" + bad_interpreter.path + "': No such file or directory"))
      << r.err;
}

// ---- dry run, overrides, help -----------------------------------------------------

TEST(Axonrun, DryRunPrintsTheQuotedCommand) {
  Result r = run({"-n", "2", "--mpirun", "/bin/echo", "--dry-run", "sh", "-c", "echo it's $HOME"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "/bin/echo -np 2 --bind-to none sh -c 'echo it'\\''s $HOME'\n");
}

TEST(Axonrun, DryRunWithNodesHostsAndOptions) {
  // -n is per node: 2 ranks on each of 2 hosts; remote ranks get Axon's variables through -x.
  Result hosts = run({"-n", "2", "--hosts", "node1,node2", "--tag-output", "--mpirun", "/bin/echo", "--dry-run", "/bin/true", "-x"},
                     {.unset = {"AXON_DISTRIBUTED_DEBUG", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"}});
  EXPECT_EQ(hosts.code, 0) << hosts.err;
  EXPECT_EQ(hosts.out,
            "/bin/echo -np 4 --host node1:2,node2:2 --bind-to none --tag-output -x AXON_LAUNCHER -x AXON_HEARTBEAT_DIR /bin/true -x\n");

  // --nnodes takes the first M hosts; --nproc-per-node is -n; --backend is exported.
  TempFile hostfile("# the cluster\nnode1 slots=8\n\n  node2\t# second\nnode3\n");
  Result file = run({"--nproc-per-node=3", "--hostfile", hostfile.path, "--nnodes", "2", "--backend", "nccl", "--mpirun",
                     "/bin/echo", "--dry-run", "/bin/true"},
                    {.unset = {"AXON_DISTRIBUTED_DEBUG", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"}});
  EXPECT_EQ(file.code, 0) << file.err;
  EXPECT_EQ(file.out,
            "/bin/echo -np 6 --host node1:3,node2:3 --bind-to none -x AXON_LAUNCHER -x AXON_HEARTBEAT_DIR -x AXON_BACKEND /bin/true\n");

  // One node: nothing to export (mpirun hands its environment to local ranks).
  Result local = run({"-n", "1", "--tag-output", "--timeout", "7.5", "--mpirun", "/bin/echo", "--dry-run", "/bin/true"});
  EXPECT_EQ(local.out, "/bin/echo -np 1 --bind-to none --tag-output /bin/true\n");
}

TEST(Axonrun, BackendIsExportedToTheRanks) {
  Result r = run({"-n", "2", "--backend", "mpi", "sh", "-c", "echo backend=$AXON_BACKEND"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "backend=mpi\nbackend=mpi\n");
}

TEST(Axonrun, TagOutputNamesEachLinesRank) {
  Result r = run({"-n", "2", "--tag-output", "sh", "-c", "echo hello"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, ",0]<stdout>:hello\n")) << r.out;
  EXPECT_TRUE(contains(r.out, ",1]<stdout>:hello\n")) << r.out;
}

// Inside a Slurm allocation (SLURM_JOB_ID) the job starts with srun; a stand-in srun that lists
// the PMIx plugin for --mpi=list and echoes anything else shows the command line.
TEST(Axonrun, InsideASlurmAllocationSrunStartsTheJob) {
  TempFile fake_srun("#!/bin/sh\nif [ \"$1\" = --mpi=list ]; then printf 'MPI plugin types are...\\n\\tnone\\n\\tpmix\\n'; "
                     "exit 0; fi\necho \"$@\"\n",
                     0700);
  const EnvChanges slurm = {.unset = {"SLURM_MPI_TYPE", "SLURM_NNODES"},
                            .set = {{"SLURM_JOB_ID", "42"}, {"SLURM_JOB_NUM_NODES", "1"}, {"AXON_SRUN", fake_srun.path}}};
  Result dry = run({"-n", "2", "--tag-output", "--dry-run", "/bin/true", "a b"}, slurm);
  EXPECT_EQ(dry.code, 0) << dry.err;
  EXPECT_EQ(dry.out, fake_srun.path +
                         " --nodes=1 --ntasks=2 --ntasks-per-node=2 --kill-on-bad-exit=1 --cpu-bind=none --mpi=pmix --label "
                         "/bin/true 'a b'\n");

  // Without -n, srun takes the allocation's tasks; the user's SLURM_MPI_TYPE is left to srun.
  EnvChanges chosen = slurm;
  chosen.set.push_back({"SLURM_MPI_TYPE", "pmi2"});
  Result all = run({"--dry-run", "/bin/true"}, chosen);
  EXPECT_EQ(all.code, 0) << all.err;
  EXPECT_EQ(all.out, fake_srun.path + " --kill-on-bad-exit=1 --cpu-bind=none /bin/true\n");

  // Two nodes from the allocation, and hosts as a node list.
  EnvChanges two = slurm;
  for (auto& [name, value] : two.set)
    if (name == "SLURM_JOB_NUM_NODES") value = "2";
  Result nodes = run({"-n", "4", "--hosts", "a,b", "--dry-run", "/bin/true"}, two);
  EXPECT_EQ(nodes.out, fake_srun.path +
                           " --nodes=2 --ntasks=8 --ntasks-per-node=4 --nodelist=a,b --kill-on-bad-exit=1 --cpu-bind=none "
                           "--mpi=pmix /bin/true\n");

  // An mpirun named on the command line is used inside the allocation too.
  Result named = run({"-n", "1", "--mpirun", "/bin/echo", "--dry-run", "/bin/true"}, slurm);
  EXPECT_EQ(named.out, "/bin/echo -np 1 --bind-to none /bin/true\n");

  // --launcher mpirun overrides the allocation.
  Result forced = run({"-n", "1", "--launcher", "mpirun", "--mpirun", "/bin/echo", "--dry-run", "/bin/true"}, slurm);
  EXPECT_EQ(forced.out, "/bin/echo -np 1 --bind-to none /bin/true\n");

  // The real run goes through the stand-in srun.
  Result real = run({"-n", "2", "/bin/true"}, slurm);
  EXPECT_EQ(real.code, 0) << real.err;
  EXPECT_EQ(real.out, "--nodes=1 --ntasks=2 --ntasks-per-node=2 --kill-on-bad-exit=1 --cpu-bind=none --mpi=pmix /bin/true\n");
}

// axonrun started as a rank of another job would start one job per rank: it says so.
TEST(Axonrun, WarnsWhenItRunsAsARankOfAnotherJob) {
  Result nested = run({"-n", "1", "--mpirun", "/bin/echo", "--dry-run", "/bin/true"},
                      {.set = {{"SLURM_STEP_ID", "0"}, {"SLURM_PROCID", "1"}, {"SLURM_STEP_NUM_TASKS", "4"},
                               {"SLURM_LOCALID", "1"}, {"SLURM_NODEID", "0"}}});
  EXPECT_EQ(nested.code, 0) << nested.err;
  EXPECT_TRUE(contains(nested.err, "axonrun: warning: axonrun itself runs as rank 1 of 4 (slurm launcher variables)"))
      << nested.err;
  Result alone = run({"-n", "1", "--mpirun", "/bin/echo", "--dry-run", "/bin/true"});
  EXPECT_FALSE(contains(alone.err, "warning")) << alone.err;
}

TEST(Axonrun, RejectsBadNewOptionsNamingThem) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  TempFile empty_hostfile("# nothing\n");
  TempFile bad_hostfile("node1\nno/de\n");
  for (const Case& c : std::vector<Case>{
           {{"--nproc-per-node", "0", "prog"}, "-n expects a positive integer number of ranks, got '0'"},
           {{"-n", "1", "--nnodes", "x", "prog"}, "--nnodes expects a positive integer number of nodes, got 'x'"},
           {{"-n", "1", "--nnodes", "2", "prog"}, "--nnodes 2 needs --hosts or --hostfile (or a Slurm allocation)"},
           {{"-n", "1", "--hosts", "a,b", "--nnodes", "3", "prog"}, "--nnodes 3 but only 2 hosts given"},
           {{"-n", "1", "--hosts", "a,,b", "prog"}, "--hosts 'a,,b': '' is not a host name"},
           {{"-n", "1", "--hosts", "a", "--hostfile", "f", "prog"}, "give either --hosts or --hostfile, not both"},
           {{"-n", "1", "--hostfile", "/no/such/file", "prog"}, "--hostfile '/no/such/file': cannot open"},
           {{"-n", "1", "--hostfile", empty_hostfile.path, "prog"}, "--hostfile '" + empty_hostfile.path + "' names no host"},
           {{"-n", "1", "--hostfile", bad_hostfile.path, "prog"}, "--hostfile " + bad_hostfile.path + ":2: 'no/de' is not a host name"},
           {{"-n", "1", "--backend", "gloo", "prog"}, "--backend expects mpi, nccl or auto, got 'gloo'"},
           {{"-n", "1", "--timeout", "-1", "prog"}, "--timeout expects seconds, a number from 0 (no watchdog) to 604800, got '-1'"},
           {{"-n", "1", "--timeout", "nan", "prog"}, "--timeout expects seconds, a number from 0 (no watchdog) to 604800, got 'nan'"},
           {{"-n", "1", "--timeout=", "prog"}, "--timeout expects seconds, a number from 0 (no watchdog) to 604800, got ''"},
           {{"-n", "1", "--launcher", "ssh", "prog"}, "--launcher expects auto, mpirun or srun, got 'ssh'"},
       }) {
    Result r = run(c.args, {.unset = {"SLURM_JOB_ID"}});
    EXPECT_EQ(r.code, 2) << c.message;
    EXPECT_TRUE(contains(r.err, "axonrun: error: " + c.message)) << "expected: " << c.message << "\ngot: " << r.err;
  }
}

TEST(Axonrun, MpirunOverrides) {
  // With echo standing in for mpirun, the job prints the mpirun arguments it was given.
  Result flag = run({"-n", "1", "--mpirun", "/bin/echo", "/bin/true"});
  EXPECT_EQ(flag.code, 0) << flag.err;
  EXPECT_EQ(flag.out, "-np 1 --bind-to none /bin/true\n");

  Result env = run({"-n", "1", "/bin/true"}, {.set = {{"AXON_MPIRUN", "/bin/echo"}}});
  EXPECT_EQ(env.code, 0) << env.err;
  EXPECT_EQ(env.out, "-np 1 --bind-to none /bin/true\n");

  // The flag wins over the environment.
  Result both = run({"-n", "1", "--mpirun=/bin/echo", "--dry-run", "/bin/true"}, {.set = {{"AXON_MPIRUN", "/bin/false"}}});
  EXPECT_EQ(both.out, "/bin/echo -np 1 --bind-to none /bin/true\n");
}

TEST(Axonrun, HelpAndVersion) {
  Result help = run({"--help"});
  EXPECT_EQ(help.code, 0);
  EXPECT_TRUE(contains(help.out, "Usage: axonrun [-n N | --nproc-per-node N] [--nnodes M]")) << help.out;
  for (const char* option : {"--hosts", "--hostfile", "--backend", "--timeout", "--tag-output", "--launcher", "--dry-run"})
    EXPECT_TRUE(contains(help.out, option)) << option;
  EXPECT_TRUE(contains(help.out, "--allow-many-ranks")) << help.out;
  EXPECT_TRUE(contains(help.out, "--bind-to none")) << help.out;

  Result version = run({"--version"});
  EXPECT_EQ(version.code, 0);
  EXPECT_TRUE(contains(version.out, "axonrun")) << version.out;
}

}  // namespace
