// The heartbeat record (axon/heartbeat.h): its one-line format, and what a rank's writer puts in
// its file as it enters and leaves collectives and exits. The watchdog that reads these files is
// tested end to end in test_jobs.cpp (JobFaults.*).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

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

// One process has one writer, so the whole sequence is one test.
TEST(Heartbeat, TheWriterRecordsCollectivesProgressAndExit) {
  char dir[] = "/tmp/axon-heartbeat-test-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  auto read = [&] {
    std::ifstream in(hb::file_for(dir, 5));
    std::string line;
    std::getline(in, line);
    return hb::parse(line + "\n");
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

  hb::collective_begin("broadcast");
  hb::collective_begin("allreduce");  // nested (NCCL forwarding to MPI): one collective
  r = read();
  EXPECT_EQ(r->state, hb::State::collective);
  EXPECT_EQ(r->seq, 1u);
  EXPECT_EQ(r->op, "broadcast");
  hb::collective_end();
  EXPECT_EQ(read()->state, hb::State::collective);
  hb::collective_end();
  r = read();
  EXPECT_EQ(r->state, hb::State::running);
  EXPECT_EQ(r->seq, 1u);

  const std::int64_t before = r->updated_ns;
  ::usleep(2000);
  hb::progress();
  EXPECT_GT(read()->updated_ns, before);
  EXPECT_EQ(read()->state, hb::State::running);

  hb::exiting(3);
  r = read();
  EXPECT_EQ(r->state, hb::State::exited);
  EXPECT_EQ(r->status, 3);

  ::unsetenv(hb::kDirVariable);
  std::filesystem::remove_all(dir);
}

}  // namespace
