// axonrun's watchdog (launcher/watchdog.h) against heartbeat files: crafted records, a partial
// one, and this process's own heartbeat writer (axon/heartbeat.h) with its publisher thread. The
// end-to-end cases (real ranks under axonrun and mpirun) are JobFaults.* in test_jobs.cpp.
#include "watchdog.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "axon/heartbeat.h"

namespace {

namespace hb = axon::heartbeat;
using ::testing::ContainsRegex;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

struct TempDir {
  std::string path;
  TempDir() {
    char dir[] = "/tmp/axon-watchdog-test-XXXXXX";
    if (::mkdtemp(dir)) path = dir;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

std::string host_name() {
  char host[256] = "?";
  if (::gethostname(host, sizeof host - 1) != 0) return "?";
  return host;
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
}

// A record of this process (so that its pid is alive) last updated 10 s ago.
hb::Record stale(int rank, hb::State state, std::uint64_t seq, const char* op) {
  const std::int64_t then = hb::now_ns() - 10'000'000'000;
  return hb::Record{.rank = rank, .pid = static_cast<long>(::getpid()), .host = host_name(), .state = state,
                    .seq = seq, .op = op, .since_ns = then, .updated_ns = then};
}

std::string joined(const std::vector<std::string>& lines) {
  std::string text;
  for (const std::string& line : lines) text += line + "\n";
  return text;
}

TEST(Watchdog, NamesTheRankTheOthersWaitForWithItsCollectiveAndOp) {
  TempDir dir;
  ASSERT_FALSE(dir.path.empty());
  write_file(hb::file_for(dir.path, 0), hb::format(stale(0, hb::State::collective, 4, "allreduce")));
  write_file(hb::file_for(dir.path, 1), hb::format(stale(1, hb::State::running, 3, "allreduce")));
  write_file(hb::file_for(dir.path, 2), hb::format(stale(2, hb::State::collective, 4, "allreduce")));
  axon::launcher::Watchdog dog(dir.path, 3, 1.0);
  dog.scan();
  EXPECT_EQ(dog.registered(), 3);
  std::vector<int> blamed;
  std::optional<std::vector<std::string>> lines = dog.stuck(blamed);
  ASSERT_TRUE(lines.has_value());
  EXPECT_THAT(blamed, ElementsAre(1));
  const std::string text = joined(*lines);
  EXPECT_THAT(text, ContainsRegex("rank 1 \\(pid [0-9]+, host [^)]+\\) is stuck outside a collective: its last, "
                                  "collective #3 \\(allreduce\\), ended 10\\.[0-9] s ago"));
  EXPECT_THAT(text, ContainsRegex("rank 0 \\(pid [0-9]+, host [^)]+\\) waits inside collective #4 \\(allreduce\\)"));
  EXPECT_THAT(text, ContainsRegex("rank 2 \\(pid [0-9]+, host [^)]+\\) waits inside collective #4 \\(allreduce\\)"));
}

TEST(Watchdog, APartialRecordIsNotReadUntilItIsWhole) {
  TempDir dir;
  ASSERT_FALSE(dir.path.empty());
  write_file(hb::file_for(dir.path, 0), hb::format(stale(0, hb::State::collective, 2, "barrier")));
  const std::string whole = hb::format(stale(1, hb::State::collective, 2, "barrier"));
  write_file(hb::file_for(dir.path, 1), whole.substr(0, 100));  // a write caught halfway
  axon::launcher::Watchdog dog(dir.path, 2, 1.0);
  dog.scan();
  EXPECT_EQ(dog.registered(), 1);
  std::vector<int> blamed;
  std::optional<std::vector<std::string>> lines = dog.stuck(blamed);
  ASSERT_TRUE(lines.has_value());
  EXPECT_THAT(blamed, ElementsAre(1));
  EXPECT_THAT(joined(*lines), HasSubstr("rank 1 never reached Axon's communicator (no heartbeat file)"));

  write_file(hb::file_for(dir.path, 1), whole);
  dog.scan();
  EXPECT_EQ(dog.registered(), 2);
  lines = dog.stuck(blamed);
  ASSERT_TRUE(lines.has_value());
  EXPECT_THAT(blamed, ElementsAre(0, 1));  // both inside #2: mismatched collectives
  EXPECT_THAT(joined(*lines), HasSubstr("rank 1"));
  EXPECT_THAT(joined(*lines), HasSubstr("is stuck inside collective #2 (barrier)"));
}

// This process's writer as rank 0: while collectives run (a thread, as fast as it can) the
// watchdog sees progress; once the rank stays inside one, it names it with its seq and op.
TEST(Watchdog, SeesARankWriterMakeProgressThenStickInsideACollective) {
  static bool ran = false;  // start() works once per process (--gtest_repeat runs this again)
  if (std::exchange(ran, true)) GTEST_SKIP() << "the process's heartbeat writer was started by the first run";
  TempDir dir;
  ASSERT_FALSE(dir.path.empty());
  ::setenv(hb::kDirVariable, dir.path.c_str(), 1);
  hb::start(0);
  ::unsetenv(hb::kDirVariable);
  const double timeout_s = 1.0;  // well above the publishing period, even on a loaded machine
  axon::launcher::Watchdog dog(dir.path, 1, timeout_s);
  std::vector<int> blamed;

  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> done{0};
  std::thread busy([&] {
    while (!stop) {
      hb::collective_begin("allreduce");
      hb::collective_end();
      ++done;
    }
  });
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - start < std::chrono::milliseconds(1500)) {
    dog.scan();
    EXPECT_FALSE(dog.stuck(blamed).has_value()) << "progress taken for a hang";
    ::usleep(100'000);
  }
  stop = true;
  busy.join();
  EXPECT_EQ(dog.registered(), 1);

  hb::collective_begin("broadcast");  // and never leave it
  std::optional<std::vector<std::string>> lines;
  for (int i = 0; i < 60 && !lines; ++i) {
    ::usleep(100'000);
    dog.scan();
    lines = dog.stuck(blamed);
  }
  ASSERT_TRUE(lines.has_value()) << "the watchdog never saw the rank stuck";
  EXPECT_THAT(blamed, ElementsAre(0));
  const std::string seq = std::to_string(done.load() + 1);
  EXPECT_THAT(joined(*lines), HasSubstr("rank 0 (pid " + std::to_string(::getpid()) + ", host " + host_name() +
                                        ") is stuck inside collective #" + seq + " (broadcast) since"));
  hb::collective_end();
  hb::exiting(0);
}

}  // namespace
