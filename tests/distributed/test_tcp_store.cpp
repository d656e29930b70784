// The TCP store and the tcp communicator, in one process: ranks are threads, each with its own
// client (rank 0 also hosts the store). Whole jobs of processes: tests/launcher/test_survival.cpp.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <future>
#include <thread>
#include <vector>

#include "axon/communicator.h"
#include "axon/tcp_store.h"

#ifndef AXON_HAS_TCP_STORE
TEST(TcpStore, NotBuilt) { GTEST_SKIP() << "built without Boost.Asio (libboost-dev): no TCP store"; }
#else

using ::testing::HasSubstr;
using namespace std::chrono_literals;

namespace {

// A server on a port the kernel picks (0), and `world - 1` more clients of it.
struct Job {
  explicit Job(int world, std::chrono::milliseconds timeout = 5s) {
    stores.push_back(std::make_unique<axon::TcpStore>("127.0.0.1", 0, 0, world, true, timeout));
    for (int r = 1; r < world; ++r)
      stores.push_back(std::make_unique<axon::TcpStore>("127.0.0.1", stores[0]->port(), r, world, false, timeout));
  }
  ~Job() {
    // Clients leave first: the server waits for them.
    for (size_t r = stores.size(); r-- > 0;) stores[r].reset();
  }
  std::vector<std::unique_ptr<axon::TcpStore>> stores;
};

}  // namespace

TEST(TcpStore, SetGetAddCheckAndErase) {
  Job job(2);
  auto& a = *job.stores[0];
  auto& b = *job.stores[1];
  a.set("k", std::string("v\0w", 3));
  EXPECT_EQ(b.get("k"), std::string("v\0w", 3));
  EXPECT_EQ(a.add("n", 5), 5);
  EXPECT_EQ(b.add("n", -2), 3);
  EXPECT_TRUE(b.check({"k", "n"}));
  EXPECT_FALSE(b.check({"k", "missing"}));
  b.erase("k");
  EXPECT_FALSE(a.check({"k"}));
  b.set("once", "1");
  EXPECT_EQ(a.take("once"), "1");
  EXPECT_FALSE(b.check({"once"}));
}

TEST(TcpStore, GetWaitsUntilAnotherRankSetsTheKey) {
  Job job(2);
  auto waiting = std::async(std::launch::async, [&] { return job.stores[1]->get("late"); });
  EXPECT_EQ(waiting.wait_for(200ms), std::future_status::timeout);
  job.stores[0]->set("late", "here");
  EXPECT_EQ(waiting.get(), "here");
}

TEST(TcpStore, AGetThatTimesOutNamesTheKeyAndTheRank) {
  Job job(2, 300ms);
  const auto start = std::chrono::steady_clock::now();
  try {
    job.stores[1]->get("never");
    FAIL() << "no timeout";
  } catch (const axon::StoreError& e) {
    EXPECT_THAT(e.what(), HasSubstr("rank 1 waited 0.3 s for key 'never'"));
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  // The connection is still in step: the next request works.
  job.stores[0]->set("after", "ok");
  EXPECT_EQ(job.stores[1]->get("after"), "ok");
}

TEST(TcpStore, ARendezvousNamesTheRanksThatNeverJoined) {
  auto server = std::make_unique<axon::TcpStore>("127.0.0.1", 0, 0, 4, true, 500ms);
  axon::TcpStore one("127.0.0.1", server->port(), 1, 4, false, 500ms);
  auto joined = std::async(std::launch::async, [&] { one.rendezvous("rdzv"); });
  try {
    server->rendezvous("rdzv");
    FAIL() << "ranks 2 and 3 never came";
  } catch (const axon::StoreError& e) {
    EXPECT_THAT(e.what(), HasSubstr("ranks 2 and 3 of 4 did not join within 0.5 s"));
    EXPECT_THAT(e.what(), HasSubstr("seen from rank 0"));
  }
  EXPECT_THROW(joined.get(), axon::StoreError);
}

TEST(TcpStore, ARankWithAnotherWorldSizeIsNamed) {
  auto server = std::make_unique<axon::TcpStore>("127.0.0.1", 0, 0, 2, true, 2s);
  auto other = std::async(std::launch::async, [&] {
    axon::TcpStore one("127.0.0.1", server->port(), 1, 3, false, 2s);
    try {
      one.rendezvous("rdzv");
    } catch (const axon::StoreError&) {
    }
  });
  try {
    server->rendezvous("rdzv");
    FAIL() << "world sizes differ";
  } catch (const axon::StoreError& e) {
    EXPECT_THAT(e.what(), HasSubstr("rank 0 has WORLD_SIZE=2 but rank 1 has WORLD_SIZE=3"));
  }
  other.get();
}

TEST(TcpStore, AnUnreachableStoreIsAnErrorNamingTheAddressWithinTheTimeout) {
  // A port that nobody listens on: bind one, and close it again.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const int port = ntohs(addr.sin_port);
  ::close(fd);
  const auto start = std::chrono::steady_clock::now();
  try {
    axon::TcpStore client("127.0.0.1", port, 2, 3, false, 400ms);
    FAIL() << "connected to nothing";
  } catch (const axon::StoreError& e) {
    EXPECT_THAT(e.what(), HasSubstr("rank 2 cannot reach the store of rank 0 at 127.0.0.1:" + std::to_string(port)));
    EXPECT_THAT(e.what(), HasSubstr("within 0.4 s"));
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
}

TEST(TcpStore, ARankThatVanishesEndsTheOthersWaitsNamingIt) {
  auto server = std::make_unique<axon::TcpStore>("127.0.0.1", 0, 0, 3, true, 0ms);
  auto one = std::make_unique<axon::TcpStore>("127.0.0.1", server->port(), 1, 3, false, 0ms);
  auto two = std::make_unique<axon::TcpStore>("127.0.0.1", server->port(), 2, 3, false, 0ms);
  // Rank 0 waits without a timeout for a key only rank 2 would set; rank 2 goes away without a
  // bye (as when it is killed: destroyed while an exception is in flight).
  auto waiting = std::async(std::launch::async, [&] { return server->get_no_timeout("from-2"); });
  std::this_thread::sleep_for(100ms);
  // Destroyed while an exception unwinds the frame: no bye.
  auto vanish = [&] {
    struct Dropper {
      std::unique_ptr<axon::TcpStore>& s;
      ~Dropper() { s.reset(); }
    } drop{two};
    throw std::runtime_error("unwinding");
  };
  EXPECT_THROW(vanish(), std::runtime_error);
  try {
    waiting.get();
    FAIL() << "the wait did not end";
  } catch (const axon::StoreError& e) {
    EXPECT_THAT(e.what(), HasSubstr("rank 0 waits for key 'from-2'"));
    EXPECT_THAT(e.what(), HasSubstr("rank 2 of 3 left the job without closing its connection to the store"));
  }
  // Later waits for keys nobody set fail at once too; set keys are still there.
  server->set("x", "1");
  EXPECT_EQ(one->get("x"), "1");
  EXPECT_THROW(one->get_no_timeout("never"), axon::StoreError);
}

// make_tcp_communicator reads the process environment; the collectives themselves run in whole
// jobs of processes (tests/launcher/test_survival.cpp, tcp_collectives).
TEST(TcpCommunicator, MissingMasterAddressIsNamed) {
  ::setenv("RANK", "0", 1);
  ::setenv("WORLD_SIZE", "2", 1);
  ::unsetenv("MASTER_ADDR");
  ::setenv("MASTER_PORT", "29999", 1);
  try {
    axon::make_tcp_communicator();
    ADD_FAILURE() << "no error";
  } catch (const axon::CommError& e) {
    EXPECT_THAT(e.what(), HasSubstr("needs MASTER_ADDR and MASTER_PORT"));
    EXPECT_THAT(e.what(), HasSubstr("MASTER_ADDR is not set"));
  }
  ::unsetenv("RANK");
  ::unsetenv("WORLD_SIZE");
  ::unsetenv("MASTER_PORT");
}
#endif
