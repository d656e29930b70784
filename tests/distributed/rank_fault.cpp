// A job with one faulty rank, for the watchdog and failure tests (test_jobs.cpp). Every rank
// makes three all-reduces, prints "rank R ready", then:
//   rank_fault hang-outside R  rank R sleeps outside any collective; the others all-reduce again
//   rank_fault mismatch        rank 0 enters a barrier, the others an all-reduce: every rank is
//                              inside a collective that never completes
//   rank_fault stop R          rank R stops itself (SIGSTOP); the others all-reduce again
//   rank_fault kill R          rank R kills itself (SIGKILL); the others all-reduce again
//   rank_fault throw R         rank R throws an exception nobody catches (std::terminate)
// Sleeps are bounded (120 s), so even a leaked rank goes away on its own.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "axon/communicator.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: rank_fault hang-outside|mismatch|stop|kill|throw [RANK]\n");
    return 2;
  }
  const std::string mode = argv[1];
  const int faulty = argc > 2 ? std::atoi(argv[2]) : 1;
  auto comm = axon::make_mpi_communicator();
  std::vector<float> value{1.0f};
  for (int i = 0; i < 3; ++i) comm->allreduce(value);
  std::printf("rank %d ready\n", comm->rank());
  std::fflush(stdout);

  if (mode == "mismatch") {
    if (comm->rank() == 0) comm->barrier();
    else comm->allreduce(value);
  } else if (comm->rank() == faulty) {
    if (mode == "hang-outside") {
      for (int i = 0; i < 120; ++i) ::sleep(1);
    } else if (mode == "stop") {
      ::raise(SIGSTOP);
    } else if (mode == "kill") {
      ::raise(SIGKILL);
    } else if (mode == "throw") {
      throw std::runtime_error("rank_fault: simulated uncaught exception");
    }
  } else {
    comm->allreduce(value);
  }
  for (int i = 0; i < 120; ++i) ::sleep(1);
  return 0;
}
