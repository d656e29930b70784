// A rank program for the launcher's tests, started by axonrun under real mpirun.
//   rank_program sleep      every rank joins MPI, prints "rank R ready", then sleeps (at most
//                           120 s, so even a leaked rank goes away on its own)
//   rank_program fail CODE  rank 1 prints one error line and exits with CODE while rank 0 waits
//                           for it in an all-reduce (Axon then aborts the job)
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "axon/communicator.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: rank_program sleep | fail CODE\n");
    return 2;
  }
  auto comm = axon::make_mpi_communicator();
  if (std::strcmp(argv[1], "sleep") == 0) {
    comm->barrier();
    std::printf("rank %d ready\n", comm->rank());
    std::fflush(stdout);
    for (int i = 0; i < 120; ++i) ::sleep(1);
    return 0;
  }
  const int code = argc > 2 ? std::atoi(argv[2]) : 1;
  if (comm->rank() == 1) {
    std::fprintf(stderr, "rank 1: error: simulated failure for the launcher test\n");
    return code;
  }
  std::vector<float> value{1.0f};
  comm->allreduce(value);
  return 0;
}
