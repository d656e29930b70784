// Micro-benchmarks of the pieces of a training step (Google Benchmark).
//   build/bin/bench_core --benchmark_filter=TrainStep
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "axon/autograd.h"
#include "axon/heartbeat.h"
#include "axon/losses.h"
#include "axon/model.h"
#include "axon/ops.h"
#include "axon/optimizers.h"
#include "axon/random.h"

using namespace axon;

static void BM_LinearForwardBackward(benchmark::State& state) {
  set_num_threads(1);
  const int64_t batch = state.range(0), in = state.range(1), out = state.range(2);
  Generator gen(0);
  Tensor x = uniform({batch, in}, -1, 1, gen);
  Tensor w = uniform({in, out}, -1, 1, gen).set_requires_grad();
  Tensor b = Tensor::zeros({out}).set_requires_grad();
  w.set_grad(Tensor::zeros(w.shape()));
  b.set_grad(Tensor::zeros(b.shape()));
  for (auto _ : state) {
    Tensor y = linear(x, w, b);
    y.backward(Tensor::ones(y.shape()));
    benchmark::DoNotOptimize(w.grad().data());
  }
  // forward + weight gradient (the input needs none): 4 flops per multiply-add pair of GEMMs
  state.counters["GFLOP/s"] = benchmark::Counter(4.0 * batch * in * out, benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1000);
}
BENCHMARK(BM_LinearForwardBackward)->Args({128, 784, 1024})->Args({128, 1024, 1024})->Unit(benchmark::kMillisecond);

static void BM_AdamStep(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  std::vector<float> p(n, 0.5f), g(n, 0.01f);
  auto opt = adam();
  for (auto _ : state) {
    opt->step(p, g);
    benchmark::DoNotOptimize(p.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(n) * 5 * 4);
}
BENCHMARK(BM_AdamStep)->Arg(1863690)->Unit(benchmark::kMillisecond);

// The same Adam update as a chain of transforms (scale_by_adam → scale_by_learning_rate): a few
// element-wise passes instead of the fused kernel's one. Measures what fusing saves.
static void BM_AdamChainStep(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  std::vector<float> p(n, 0.5f), g(n, 0.01f);
  auto opt = chain_optimizer("adam_chain", 1e-3, chain({scale_by_adam(), scale_by_learning_rate()}));
  for (auto _ : state) {
    opt->step(p, g);
    benchmark::DoNotOptimize(p.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(n) * 5 * 4);
}
BENCHMARK(BM_AdamChainStep)->Arg(1863690)->Unit(benchmark::kMillisecond);

// Every optimizer by name (make_optimizer), 1.86M parameters.
static void BM_OptimizerStep(benchmark::State& state, const char* name) {
  const size_t n = 1863690;
  std::vector<float> p(n, 0.5f), g(n, 0.01f);
  auto opt = make_optimizer(name, 1e-3);
  for (auto _ : state) {
    opt->step(p, g);
    benchmark::DoNotOptimize(p.data());
  }
}
BENCHMARK_CAPTURE(BM_OptimizerStep, sgd, "sgd")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_OptimizerStep, adamw, "adamw")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_OptimizerStep, rmsprop, "rmsprop")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_OptimizerStep, adagrad, "adagrad")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_OptimizerStep, radam, "radam")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_OptimizerStep, nadam, "nadam")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_OptimizerStep, lamb, "lamb")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_OptimizerStep, lion, "lion")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_OptimizerStep, noisy_sgd, "noisy_sgd")->Unit(benchmark::kMillisecond);

static void BM_SoftmaxCrossEntropy(benchmark::State& state) {
  Generator gen(0);
  Tensor logits = uniform({128, 10}, -3, 3, gen).set_requires_grad();
  std::vector<int32_t> labels(128);
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<int32_t>(i % 10);
  for (auto _ : state) {
    Tensor loss = softmax_cross_entropy(logits, labels);
    loss.backward();
    benchmark::DoNotOptimize(logits.grad().data());
  }
}
BENCHMARK(BM_SoftmaxCrossEntropy)->Unit(benchmark::kMicrosecond);

// A whole step without data loading: forward, loss, backward, Adam.
static void BM_TrainStep(benchmark::State& state) {
  set_num_threads(static_cast<int>(state.range(1)));
  const bool big = state.range(0) == 1;
  Model model = big ? input({-1, 784}) | dense(1024, Activation::relu) | dense(1024, Activation::relu) | dense(10)
                    : input({-1, 784}) | dense(128, Activation::relu) | dense(10);
  Parameters params = init(model, 0);
  ModelPlan p = plan(model);
  auto opt = adam();
  Generator gen(1);
  Tensor x = uniform({128, 784}, 0, 1, gen);
  std::vector<int32_t> labels(128);
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<int32_t>(i % 10);
  for (auto _ : state) {
    params.zero_grad();
    Tensor loss = softmax_cross_entropy(forward(p, params, x, ForwardContext{true, nullptr}), labels);
    loss.backward();
    opt->step(params.values(), params.grads());
  }
  state.counters["samples/s"] = benchmark::Counter(128.0, benchmark::Counter::kIsIterationInvariantRate);
  set_num_threads(1);
}
BENCHMARK(BM_TrainStep)->ArgNames({"big", "threads"})->Args({0, 1})->Args({1, 1})->Args({0, 2})->Args({1, 2})
    ->Unit(benchmark::kMillisecond)->UseRealTime();

// What a rank's heartbeat adds to each collective under axonrun (axon/heartbeat.h): the marks on
// entry and on exit (this thread's counters in process memory; the publisher thread rewrites the
// file in the temporary folder at most every kPublishPeriodMs, off this path).
static void BM_HeartbeatPerCollective(benchmark::State& state) {
  char dir[] = "/tmp/axon-bench-heartbeat-XXXXXX";
  if (!::mkdtemp(dir)) {
    state.SkipWithError("mkdtemp failed");
    return;
  }
  ::setenv(axon::heartbeat::kDirVariable, dir, 1);
  axon::heartbeat::start(0);
  for (auto _ : state) {
    axon::heartbeat::collective_begin("allreduce");
    axon::heartbeat::collective_end();
  }
  ::unsetenv(axon::heartbeat::kDirVariable);
  std::remove(axon::heartbeat::file_for(dir, 0).c_str());
  ::rmdir(dir);
}
BENCHMARK(BM_HeartbeatPerCollective)->Unit(benchmark::kNanosecond);

BENCHMARK_MAIN();
