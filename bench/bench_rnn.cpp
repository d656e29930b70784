// lstm forward + backward on the CPU (docs/benchmarks.md, "Recurrent layers"), the counterpart of
// bench/torch_lstm_step.py: x {batch, time, features} of uniform values, loss sum(sequence · w),
// backward to x and every parameter, after 3 warm-up steps. unroll dynamic is the fused operator,
// static the composed cell (the reference path). Prints one JSON line per unroll.
//
//   build/bin/bench_rnn --threads 1 --steps 20 [--batch 32 --time 64 --features 64 --units 256]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

#include "axon/autograd.h"
#include "axon/ops.h"
#include "axon/random.h"
#include "axon/recurrent_layers.h"

using namespace axon;

int main(int argc, char** argv) {
  int threads = 1, steps = 20;
  int64_t B = 32, T = 64, F = 64, U = 256;
  bool with_static = true;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const long v = std::strtol(argv[i + 1], nullptr, 10);
    if (a == "--threads") threads = static_cast<int>(v);
    else if (a == "--steps") steps = static_cast<int>(v);
    else if (a == "--batch") B = v;
    else if (a == "--time") T = v;
    else if (a == "--features") F = v;
    else if (a == "--units") U = v;
    else if (a == "--static") with_static = v != 0;
    else {
      std::fprintf(stderr, "bench_rnn: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  set_num_threads(threads);
  FlushDenormalsGuard ftz;
  Generator gen(0);
  Tensor x = uniform({B, T, F}, -1, 1, gen);
  x.set_requires_grad();
  Tensor ik = uniform({F, 4 * U}, -0.1f, 0.1f, gen), hk = uniform({U, 4 * U}, -0.1f, 0.1f, gen),
         b = uniform({4 * U}, -0.1f, 0.1f, gen);
  for (Tensor* p : {&ik, &hk, &b}) p->set_requires_grad();
  Tensor c0 = Tensor::zeros({B, U}), h0 = Tensor::zeros({B, U});
  Tensor w = uniform({B, T, U}, -1, 1, gen);
  for (Unroll unroll : {Unroll::dynamic, Unroll::static_}) {
    if (unroll == Unroll::static_ && !with_static) continue;
    auto step = [&] {
      for (Tensor* p : {&x, &ik, &hk, &b}) p->set_grad(Tensor());
      UnrollResult r = lstm(x, {c0, h0}, Tensor(), ik, hk, b, unroll);
      sum(mul(r.sequence, w)).backward();
    };
    for (int i = 0; i < 3; ++i) step();
    const auto w0 = std::chrono::steady_clock::now();
    const std::clock_t c_start = std::clock();
    for (int i = 0; i < steps; ++i) step();
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - w0).count() / steps;
    const double cpu = static_cast<double>(std::clock() - c_start) / CLOCKS_PER_SEC / steps;
    std::printf("{\"framework\": \"axon\", \"unroll\": \"%s\", \"threads\": %d, \"batch\": %lld, \"time\": %lld, "
                "\"features\": %lld, \"units\": %lld, \"steps\": %d, \"wall_s_per_step\": %.6f, \"cpu_s_per_step\": %.6f, "
                "\"sequences_per_s_wall\": %.1f}\n",
                unroll == Unroll::dynamic ? "dynamic" : "static", threads, static_cast<long long>(B),
                static_cast<long long>(T), static_cast<long long>(F), static_cast<long long>(U), steps, wall, cpu,
                static_cast<double>(B) / wall);
    std::fflush(stdout);
  }
  return 0;
}
