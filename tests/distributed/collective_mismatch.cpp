// A two-rank job whose ranks all-reduce buffers of different lengths (rank r: 4 + r floats), the
// fault that AXON_DISTRIBUTED_DEBUG=1 turns into a CommError. Used by test_jobs.cpp.
#include <cstdio>
#include <vector>

#include "axon/communicator.h"

int main() {
  try {
    auto comm = axon::make_mpi_communicator();
    std::vector<float> values(static_cast<size_t>(4 + comm->rank()), 1.0f);
    comm->allreduce(values);
    std::printf("rank %d: reduced %zu values\n", comm->rank(), values.size());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "collective_mismatch: error: %s\n", e.what());
    return 1;
  }
}
