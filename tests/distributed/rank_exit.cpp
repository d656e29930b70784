// A two-rank job whose rank 1 leaves with the status given on the command line while rank 0
// waits for it in an all-reduce. Used by test_jobs.cpp.
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "axon/communicator.h"

int main(int argc, char** argv) {
  const int status = argc > 1 ? std::atoi(argv[1]) : 0;
  auto comm = axon::make_mpi_communicator();
  if (comm->rank() == 1 && status != 0) {
    std::fprintf(stderr, "rank 1: simulated failure\n");
    return status;
  }
  std::vector<float> value{1.0f};
  comm->allreduce(value);
  std::printf("rank %d: sum %g\n", comm->rank(), value[0]);
  return 0;
}
