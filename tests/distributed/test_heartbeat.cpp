// The heartbeat record (axon/heartbeat.h): its one-line format, and what a rank's writer puts in
// its file as it enters and leaves collectives and exits. The watchdog that reads these files is
// tested end to end in test_jobs.cpp (JobFaults.*).
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <utility>

#include "axon/heartbeat.h"

namespace {

namespace hb = axon::heartbeat;

TEST(Heartbeat, RecordRoundTripsThroughItsFixedWidthLine) {
  hb::Record r{.rank = 3, .pid = 4242, .host = "node-7.cluster", .state = hb::State::collective, .seq = 17,
               .op = "allreduce", .since_ns = 1'700'000'000'000'000'000, .updated_ns = 1'700'000'000'500'000'000,
               .status = 0};
  const std::string line = hb::format(r);
  EXPECT_EQ(line.size(), 256u);  // rewritten in place: always the same length
  EXPECT_TRUE(line.ends_with("\n"));
  std::optional<hb::Record> back = hb::parse(line);
  ASSERT_TRUE(back.has_value()) << line;
  EXPECT_EQ(back->rank, 3);
  EXPECT_EQ(back->pid, 4242);
  EXPECT_EQ(back->host, "node-7.cluster");
  EXPECT_EQ(back->state, hb::State::collective);
  EXPECT_EQ(back->seq, 17u);
  EXPECT_EQ(back->op, "allreduce");
  EXPECT_EQ(back->since_ns, r.since_ns);
  EXPECT_EQ(back->updated_ns, r.updated_ns);

  r.state = hb::State::exited;
  r.status = -1;
  EXPECT_EQ(hb::parse(hb::format(r))->status, -1);
}

TEST(Heartbeat, TornOrForeignLinesAreNotRecords) {
  const std::string line = hb::format(hb::Record{.rank = 1, .pid = 10, .host = "h"});
  EXPECT_FALSE(hb::parse(line.substr(0, 40)).has_value());              // cut short
  EXPECT_FALSE(hb::parse(line.substr(0, line.size() - 1)).has_value());  // no newline yet
  EXPECT_FALSE(hb::parse("hello\n").has_value());
  std::string bad_state = line;
  bad_state.replace(bad_state.find("state=running"), 13, "state=sleepin");
  EXPECT_FALSE(hb::parse(bad_state).has_value());
}

TEST(Heartbeat, EveryPartialWriteOfALineIsRejected) {
  // A reader that overlaps a pwrite (network file systems) may see only the first bytes of the
  // new line: no prefix of a record, however long, parses.
  const std::string line =
      hb::format(hb::Record{.rank = 2, .pid = 77, .host = "h", .state = hb::State::collective, .seq = 10,
                            .op = "broadcast", .since_ns = 2'000'000'000, .updated_ns = 2'000'000'000});
  for (size_t cut = 0; cut < line.size(); ++cut)
    EXPECT_FALSE(hb::parse(line.substr(0, cut)).has_value()) << "prefix of " << cut << " bytes";
  EXPECT_TRUE(hb::parse(line).has_value());
}

// Polls the record until `done` holds or 3 s pass (the publisher rewrites it every 100 ms).
template <typename Read, typename Done>
std::optional<hb::Record> wait_for(Read read, Done done) {
  std::optional<hb::Record> r;
  for (int i = 0; i < 300; ++i) {
    r = read();
    if (r && done(*r)) return r;
    ::usleep(10'000);
  }
  return r;
}

// One process has one writer, so the whole sequence is one test.
TEST(Heartbeat, TheWriterRecordsCollectivesProgressAndExit) {
  static bool ran = false;  // start() works once per process (--gtest_repeat runs this again)
  if (std::exchange(ran, true)) GTEST_SKIP() << "the process's heartbeat writer was started by the first run";
  char dir[] = "/tmp/axon-heartbeat-test-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  auto read = [&]() -> std::optional<hb::Record> {
    std::ifstream in(hb::file_for(dir, 5));
    std::string line;
    if (!std::getline(in, line)) return std::nullopt;
    return hb::parse(line + "\n");
  };
  auto read_line = [&] {
    std::ifstream in(hb::file_for(dir, 5));
    std::string line;
    std::getline(in, line);
    return line;
  };

  ::unsetenv(hb::kDirVariable);
  hb::collective_begin("allreduce");  // before start(): nothing to write to, no effect
  hb::collective_end();

  ::setenv(hb::kDirVariable, dir, 1);
  hb::start(5);
  std::optional<hb::Record> r = read();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->rank, 5);
  EXPECT_EQ(r->pid, ::getpid());
  EXPECT_EQ(r->state, hb::State::running);
  EXPECT_EQ(r->seq, 0u);

  // The publisher thread shows a collective in progress within its period, without any call.
  hb::collective_begin("broadcast");
  hb::collective_begin("allreduce");  // nested (NCCL forwarding to MPI): one collective
  r = wait_for(read, [](const hb::Record& x) { return x.state == hb::State::collective; });
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->state, hb::State::collective);
  EXPECT_EQ(r->seq, 1u);
  EXPECT_EQ(r->op, "broadcast");
  hb::collective_end();
  hb::progress();  // rewrites the record now
  EXPECT_EQ(read()->state, hb::State::collective);
  hb::collective_end();
  r = wait_for(read, [](const hb::Record& x) { return x.state == hb::State::running; });
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->state, hb::State::running);
  EXPECT_EQ(r->seq, 1u);
  EXPECT_EQ(r->op, "broadcast");

  // No progress, no rewrite: the publisher does not beat on its own (a stuck rank's record
  // stays stale, which is how the watchdog sees it).
  const std::string still = read_line();
  ::usleep(4 * hb::kPublishPeriodMs * 1000);
  EXPECT_EQ(read_line(), still);

  // Counters after N collectives, and an end without a begin ignored.
  for (int i = 0; i < 1000; ++i) {
    hb::collective_begin("allreduce");
    hb::collective_end();
  }
  hb::collective_end();
  hb::progress();
  r = read();
  EXPECT_EQ(r->state, hb::State::running);
  EXPECT_EQ(r->seq, 1001u);
  EXPECT_EQ(r->op, "allreduce");

  // Other threads' collectives count too, each once; a thread that ended leaves its count.
  std::thread([] {
    hb::collective_begin("allgather");
    hb::collective_end();
  }).join();
  std::thread([] {
    hb::collective_begin("reduce_scatter");
    hb::collective_begin("allreduce");
    hb::collective_end();
    hb::collective_end();
  }).join();
  hb::progress();
  EXPECT_EQ(read()->seq, 1003u);
  std::atomic<bool> entered{false}, leave{false};
  std::thread stuck([&] {
    hb::collective_begin("barrier");
    entered = true;
    while (!leave) ::usleep(1000);
    hb::collective_end();
  });
  while (!entered) ::usleep(1000);
  hb::progress();
  r = read();
  EXPECT_EQ(r->state, hb::State::collective);  // inside while any thread is
  EXPECT_EQ(r->seq, 1004u);
  EXPECT_EQ(r->op, "barrier");
  leave = true;
  stuck.join();

  const std::int64_t before = read()->updated_ns;
  ::usleep(2000);
  hb::progress();
  EXPECT_GT(read()->updated_ns, before);
  EXPECT_EQ(read()->state, hb::State::running);

  hb::exiting(3);
  r = read();
  EXPECT_EQ(r->state, hb::State::exited);
  EXPECT_EQ(r->status, 3);
  EXPECT_EQ(r->seq, 1004u);
  // The publisher leaves an exited record alone.
  hb::collective_begin("allreduce");
  ::usleep(3 * hb::kPublishPeriodMs * 1000);
  EXPECT_EQ(read()->state, hb::State::exited);
  hb::collective_end();

  ::unsetenv(hb::kDirVariable);
  std::filesystem::remove_all(dir);
}

}  // namespace
