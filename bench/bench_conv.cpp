// Convolution micro-benchmarks (docs/benchmarks.md, "The CNN"): Axon's conv on its two CPU paths
// (oneDNN, the default when Axon is built with it, and im2col + one OpenBLAS GEMM per group)
// against a direct channels-last kernel written here for the comparison and, when Debian's
// libdnnl-dev was found at configure time (scripts/install-deps.sh), oneDNN's convolution called
// directly on the same channels-last data with the weights reordered once; on the two convolutions
// of fashion_mnist --model cnn, and the cnn's whole training step. One thread each (oneDNN's OpenMP
// included) unless the name says threads.
//
//   build/bin/bench_conv --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <vector>

#ifdef AXON_BENCH_WITH_ONEDNN
#include <omp.h>

#include <oneapi/dnnl/dnnl.hpp>
#endif

#include "axon/autograd.h"
#include "axon/conv_ops.h"
#include "axon/losses.h"
#include "axon/model.h"
#include "axon/ops.h"
#include "axon/optimizers.h"
#include "axon/random.h"

using namespace axon;

namespace {

struct ConvShape {
  int64_t batch, size, cin, cout;  // a 3×3 valid conv over {batch, size, size, cin}
};
// The cnn's two convolutions at batch 128.
const ConvShape kShapes[] = {{128, 28, 1, 32}, {128, 13, 32, 64}};

// A direct convolution, channels last, valid padding, stride 1: each output position accumulates
// taps × input channels rows of the kernel {3, 3, cin, cout} into its cout outputs (an axpy over
// the contiguous output channels, which the compiler vectorizes). No im2col buffer, no GEMM.
void direct_conv(const float* __restrict x, const float* __restrict w, float* __restrict y, const ConvShape& s) {
  const int64_t out = s.size - 2;
  for (int64_t n = 0; n < s.batch; ++n)
    for (int64_t oh = 0; oh < out; ++oh)
      for (int64_t ow = 0; ow < out; ++ow) {
        float* __restrict dst = y + ((n * out + oh) * out + ow) * s.cout;
        for (int64_t c = 0; c < s.cout; ++c) dst[c] = 0.0f;
        for (int64_t kh = 0; kh < 3; ++kh)
          for (int64_t kw = 0; kw < 3; ++kw) {
            const float* src = x + ((n * s.size + oh + kh) * s.size + ow + kw) * s.cin;
            const float* wk = w + (kh * 3 + kw) * s.cin * s.cout;
            for (int64_t ci = 0; ci < s.cin; ++ci) {
              const float v = src[ci];
              const float* __restrict wr = wk + ci * s.cout;
              for (int64_t c = 0; c < s.cout; ++c) dst[c] += v * wr[c];
            }
          }
      }
}

enum class Path { onednn, im2col_gemm, direct };

void BM_ConvForward(benchmark::State& state, Path path) {
  set_num_threads(1);
  if (path == Path::onednn && !onednn_available()) {
    state.SkipWithError("Axon was built without oneDNN (libdnnl-dev)");
    return;
  }
  const bool was = onednn_enabled();
  set_onednn_enabled(path == Path::onednn);
  const ConvShape s = kShapes[state.range(0)];
  Generator gen(1);
  Tensor x = uniform({s.batch, s.size, s.size, s.cin}, -1, 1, gen);
  Tensor w = uniform({3, 3, s.cin, s.cout}, -1, 1, gen);
  const int64_t out = s.size - 2;
  Tensor y = Tensor::empty({s.batch, out, out, s.cout});
  NoGradGuard no_grad;
  for (auto _ : state) {
    if (path == Path::direct) {
      direct_conv(x.data(), w.data(), y.data(), s);
    } else {
      y = conv(x, w, Tensor());
    }
    benchmark::DoNotOptimize(y.data());
  }
  set_onednn_enabled(was);
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * s.batch * out * out * 9 * s.cin * s.cout,
                                                 benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}
BENCHMARK_CAPTURE(BM_ConvForward, onednn, Path::onednn)->ArgName("layer")->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_ConvForward, im2col_gemm, Path::im2col_gemm)->ArgName("layer")->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_ConvForward, direct, Path::direct)->ArgName("layer")->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

#ifdef AXON_BENCH_WITH_ONEDNN
// oneDNN's forward convolution on Axon's layouts: source and destination nhwc (channels last), as
// Axon's; the weights ({3, 3, cin, cout}, hwio) reordered once, outside the timing, into the layout
// oneDNN picks. The label names the implementation it chose (e.g. "brg:avx512_core").
void BM_ConvForwardOneDnn(benchmark::State& state) {
  set_num_threads(1);
  omp_set_num_threads(1);
  using namespace dnnl;
  const ConvShape s = kShapes[state.range(0)];
  const int64_t out = s.size - 2;
  Generator gen(1);
  Tensor x = uniform({s.batch, s.size, s.size, s.cin}, -1, 1, gen);
  Tensor w = uniform({3, 3, s.cin, s.cout}, -1, 1, gen);
  Tensor y = Tensor::empty({s.batch, out, out, s.cout});
  engine eng(engine::kind::cpu, 0);
  stream strm(eng);
  const auto f32 = memory::data_type::f32;
  const memory::desc src_md({s.batch, s.cin, s.size, s.size}, f32, memory::format_tag::nhwc);
  const memory::desc dst_md({s.batch, s.cout, out, out}, f32, memory::format_tag::nhwc);
  const memory::desc w_user_md({s.cout, s.cin, 3, 3}, f32, memory::format_tag::hwio);
  const memory::desc w_any_md({s.cout, s.cin, 3, 3}, f32, memory::format_tag::any);
  const convolution_forward::desc desc(prop_kind::forward_inference, algorithm::convolution_direct, src_md, w_any_md,
                                       dst_md, {1, 1}, {0, 0}, {0, 0});
  const convolution_forward::primitive_desc pd(desc, eng);
  memory src(src_md, eng, x.data()), dst(dst_md, eng, y.data()), w_user(w_user_md, eng, w.data());
  memory weights = w_user;
  if (pd.weights_desc() != w_user_md) {
    weights = memory(pd.weights_desc(), eng);
    reorder(w_user, weights).execute(strm, w_user, weights);
  }
  convolution_forward conv(pd);
  for (auto _ : state) {
    conv.execute(strm, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst}});
    strm.wait();
    benchmark::DoNotOptimize(y.data());
  }
  state.SetLabel(pd.impl_info_str());
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * s.batch * out * out * 9 * s.cin * s.cout,
                                                 benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_ConvForwardOneDnn)->ArgName("layer")->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);
#endif

// One training step of fashion_mnist --model cnn at batch 128 (forward, backward, Adam) on random
// images: the counterpart of bench/torch_cnn_step.py --padding same|valid. `same` is the cnn's
// padding today; `valid` the one of the step table of 2026-11-30 in docs/benchmarks.md.
void BM_CnnTrainStep(benchmark::State& state, bool same, bool onednn) {
  if (onednn && !onednn_available()) {
    state.SkipWithError("Axon was built without oneDNN (libdnnl-dev)");
    return;
  }
  const bool was = onednn_enabled();
  set_onednn_enabled(onednn);
  set_num_threads(static_cast<int>(state.range(0)));
  const Padding pad = same ? Padding::same() : Padding::valid();
  Model model = input({-1, 28, 28, 1}) | conv(32, {.kernel_size = {3}, .padding = pad, .activation = Activation::relu}) |
                max_pool({.kernel_size = {2}}) |
                conv(64, {.kernel_size = {3}, .padding = pad, .activation = Activation::relu}) |
                max_pool({.kernel_size = {2}}) | flatten() | dense(128, Activation::relu) | dense(10);
  Parameters params = init(model, 0);
  ModelPlan p = plan(model);
  auto opt = adam();
  Generator gen(1);
  Tensor x = uniform({128, 28, 28, 1}, 0, 1, gen);
  std::vector<int32_t> labels(128);
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<int32_t>(i % 10);
  auto step = [&] {
    params.zero_grad();
    Tensor loss = softmax_cross_entropy(forward(p, params, x, ForwardContext{true, nullptr}), labels);
    loss.backward();
    opt->step(params.values(), params.grads());
  };
  for (int i = 0; i < 3; ++i) step();  // warm-up, as bench/torch_cnn_step.py
  for (auto _ : state) step();
  state.counters["samples/s"] = benchmark::Counter(128.0, benchmark::Counter::kIsIterationInvariantRate);
  set_num_threads(1);
  set_onednn_enabled(was);
}
// 20 steps after 3 warm-up steps, as bench/torch_cnn_step.py (a fixed count: on a loaded machine
// a time-based count can stop after one step).
BENCHMARK_CAPTURE(BM_CnnTrainStep, same, true, true)
    ->ArgName("threads")->Arg(1)->Arg(2)->Iterations(20)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_CnnTrainStep, same_im2col_gemm, true, false)
    ->ArgName("threads")->Arg(1)->Arg(2)->Iterations(20)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_CnnTrainStep, valid, false, true)
    ->ArgName("threads")->Arg(1)->Arg(2)->Iterations(20)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
