// One rank of a job for the tcp backend's tests (tests/launcher/test_survival.cpp): started by
// hand with RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT, it makes the communicator and prints
// the results of each collective on one line, "rank R: ...", then exits 0.
//   tcp_collectives            the collectives
//   tcp_collectives die R      rank R kills itself (SIGKILL) before the second all-reduce
//   tcp_collectives mismatch   rank 1 all-reduces 3 floats where the others reduce 2
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "axon/communicator.h"

int main(int argc, char** argv) {
  try {
    auto comm = axon::make_communicator();
    const int r = comm->rank(), n = comm->size();
    std::vector<float> f{static_cast<float>(r + 1), static_cast<float>(-r)};
    if (argc > 1 && std::strcmp(argv[1], "mismatch") == 0 && r == 1) f.push_back(0.0f);
    comm->allreduce(std::span<float>(f), axon::ReduceOp::sum);
    if (argc > 2 && std::strcmp(argv[1], "die") == 0 && std::atoi(argv[2]) == r) ::raise(SIGKILL);
    std::vector<double> d{static_cast<double>(r) * 0.5, static_cast<double>(10 - r)};
    std::vector<double> dmax = d, dmin = d;
    comm->allreduce(std::span<double>(dmax), axon::ReduceOp::max);
    comm->allreduce(std::span<double>(dmin), axon::ReduceOp::min);
    std::vector<float> b{r == n - 1 ? 7.5f : 0.0f, r == n - 1 ? 2.25f : 0.0f};
    comm->broadcast(std::span<float>(b), n - 1);
    std::string text = r == 0 ? "hello from 0" : "............";
    comm->broadcast(std::as_writable_bytes(std::span<char>(text.data(), text.size())), 0);
    comm->barrier();
    std::vector<float> avg{static_cast<float>(r) * 3.0f};
    comm->allreduce(std::span<float>(avg), axon::ReduceOp::avg);
    // The Communicator's default all-gather, built on the all-reduce.
    axon::Tensor mine = axon::Tensor::full({1}, 10.0 * r), all = axon::Tensor::zeros({n});
    comm->allgather(mine, all);
    std::string gathered;
    for (float x : all.to_vector()) {
      gathered += ' ';  // not " " + ...: GCC 12 warns falsely (-Wrestrict) about that concatenation
      gathered += std::to_string(static_cast<int>(x));
    }
    std::printf("rank %d of %d (%s): sum %g %g max %g %g min %g %g bcast %g %g '%s' avg %g gather%s\n", r, n,
                comm->backend().c_str(), f[0], f[1], dmax[0], dmax[1], dmin[0], dmin[1], b[0], b[1], text.c_str(), avg[0],
                gathered.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tcp_collectives: error: %s\n", e.what());
    return 1;
  }
}
