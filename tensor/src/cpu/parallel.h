// parallel_for for the CPU kernels: a persistent pool of worker threads.
//
// OpenBLAS already splits large GEMMs over its own threads; everything else (activations,
// element-wise arithmetic, attention's (batch, head) pairs) ran on the calling thread, so a second
// thread sped up a small transformer's step by only 15%. Starting std::threads per call costs
// 20–180 µs in this project's VMs, as much as the loops themselves, hence workers that live for
// the process and sleep on a condition variable between calls (PyTorch's at::parallel_for and
// ggml's thread pool do the same).
//
// Once oneDNN's convolutions have started their GNU OpenMP team (a CNN), parallel_for runs on that
// same team instead (and f32 GEMMs too, cpu/onednn_conv.h's onednn_sgemm): two sets of workers on
// the same cores got in each other's way (docs/benchmarks.md, "The CNN"). Not before: OpenMP's
// idle workers spin, and an MLP's element-wise loops on them made OpenBLAS's GEMM threads 2-3×
// slower. One call at a time there too (a second caller uses the pool); a child forked after
// OpenMP started runs serially; a thread other than the convolutions' gets an OpenMP team of its
// own. Unlike the pool, GNU OpenMP ends the process ("Thread creation failed") when it cannot
// start a thread.
//
// Determinism: each index is computed by the same code whichever thread runs it (and how [0, n)
// is split depends on the thread count and on whether the pool is free), so element-wise results
// are bit-identical at any thread count. The pool grows to the largest num_threads() − 1 asked
// for, lazily, and never shrinks; a forked child, or a process that cannot start threads, runs
// serially.
#pragma once

#include <cstdint>
#include <functional>

namespace axon::cpu_detail {

// Calls body(begin, end) on disjoint ranges covering [0, n): one range per thread, at most
// num_threads() of them, each at least `grain` long (so n < 2·grain runs on the caller alone).
// The caller runs the first range and returns when all are done. A call made from inside a body,
// or while another thread's call holds the pool, runs serially on the caller. The first exception a
// body throws is rethrown here, after every range has finished.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& body);

// Work below this many elements per thread is not worth waking a worker for (~10-50 µs of loop).
inline constexpr int64_t kElementwiseGrain = 32768;

}  // namespace axon::cpu_detail
