// The CUDA device layer: errors that name their call and never leak into a later one, the caching
// allocator, and a training step that allocates nothing after its first iteration. Tests that need
// a GPU skip with the reason printed.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>
#include <vector>

#include "axon/allocator.h"
#include "axon/backend.h"
#include "axon/communicator.h"
#include "axon/cuda.h"
#include "axon/data.h"
#include "axon/losses.h"
#include "axon/model.h"
#include "axon/ops.h"
#include "axon/optimizers.h"
#include "axon/trainer.h"

namespace axon {
namespace {

#define AXON_REQUIRE_GPU()                                                                          \
  do {                                                                                              \
    if (cuda::device_count() == 0)                                                                  \
      GTEST_SKIP() << (cuda::built_with_cuda() ? "no CUDA device is visible" : "built without CUDA"); \
  } while (0)

TEST(Cuda, DeviceCountNeverThrows) {
  int count = -1;
  EXPECT_NO_THROW(count = cuda::device_count());
  EXPECT_GE(count, 0);
  EXPECT_EQ(cuda::device_count(), count);  // a failed query must not leave an error behind
}

TEST(Cuda, WithoutAGpuEveryUseSaysWhy) {
  if (cuda::device_count() > 0) GTEST_SKIP() << "a CUDA device is present";
  try {
    Tensor::zeros({4}, {DType::f32, Device::cuda(0)});
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("cuda:0"));
  }
  EXPECT_THROW(cuda::device_name(0), std::runtime_error);
  EXPECT_THROW(Tensor::ones({2}).to(Device::cuda(0)), std::runtime_error);
}

TEST(Cuda, DeviceName) {
  AXON_REQUIRE_GPU();
  EXPECT_FALSE(cuda::device_name(0).empty());
  EXPECT_THROW(cuda::device_name(cuda::device_count()), std::runtime_error);
  EXPECT_THROW(cuda::device_name(-1), std::runtime_error);
}

// The defect seen on an H200: a failed call's error was read back by the next cudaGetLastError()
// and reported by an unrelated kernel launch.
TEST(Cuda, AFailedCallDoesNotFailTheNextOne) {
  AXON_REQUIRE_GPU();
  EXPECT_THROW(cuda::device_name(cuda::device_count() + 3), std::runtime_error);
  EXPECT_THROW(Tensor::zeros({1}, {DType::f32, Device::cuda(cuda::device_count())}), std::runtime_error);
  Tensor x = Tensor::from_vector({5}, std::vector<float>{1, -2, 0.5f, 0, 3}, {DType::f32, Device::cuda(0)});
  EXPECT_EQ(mul_scalar(x, 4.0f).to_vector(), (std::vector<float>{4, -8, 2, 0, 12}));
}

TEST(Cuda, ManyBlocksAndAnOddTail) {
  AXON_REQUIRE_GPU();
  // More elements than one grid of the largest launch covers, plus an odd tail.
  const int64_t n = 65535LL * 8 * 256 * 2 + 7;
  std::vector<float> host(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) host[i] = static_cast<float>(i % 1000) - 500.0f;
  Tensor x = Tensor::from_vector({n}, host, {DType::f32, Device::cuda(0)});
  std::vector<float> out = mul_scalar(x, 0.5f).to_vector();
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(out[i], host[i] * 0.5f) << "at index " << i;
}

TEST(CudaAllocator, ReusesFreedBlocks) {
  AXON_REQUIRE_GPU();
  const Device gpu = Device::cuda(0);
  { Tensor warm = Tensor::empty({1000}, {DType::f32, gpu}); }
  const AllocatorStats before = allocator_stats(gpu);
  for (int i = 0; i < 10; ++i) Tensor t = Tensor::empty({1000}, {DType::f32, gpu});
  const AllocatorStats after = allocator_stats(gpu);
  EXPECT_EQ(after.device_malloc_calls, before.device_malloc_calls);
  EXPECT_GE(after.reserved_bytes, after.allocated_bytes);
  EXPECT_GE(after.peak_allocated_bytes, 4000u);
}

// A training step (forward, loss, backward, Adam update) on the GPU calls cudaMalloc only in its
// first iteration: later steps are served from the cache.
TEST(CudaAllocator, NoCudaMallocAfterTheFirstTrainingStep) {
  AXON_REQUIRE_GPU();
  const Device gpu = Device::cuda(0);
  Model model = input({-1, 784}) | dense(128, Activation::relu) | dense(10);
  Parameters params = init(model, 0).to(gpu);
  ModelPlan p = plan(model);
  Tensor x = Tensor::ones({64, 784}, {DType::f32, gpu});
  std::vector<int32_t> host_labels(64);
  for (int i = 0; i < 64; ++i) host_labels[i] = i % 10;
  Tensor labels = Tensor::from_vector({64}, host_labels, {DType::i32, gpu});
  Tensor values = params.flat_values(), grads = params.flat_grads();
  Tensor m = Tensor::zeros(values.shape(), values.options()), v = Tensor::zeros(values.shape(), values.options());
  Tensor nonfinite = Tensor::zeros({}, values.options());
  auto step = [&](int t) {
    params.zero_grad();
    Tensor loss = softmax_cross_entropy(forward(p, params, x, ForwardContext{}), labels);
    loss.backward();
    // Adam with lr 1e-3 at step t (the scalars as the optimizer derives them).
    AdamStep h{};
    h.beta1 = 0.9f;
    h.beta2 = 0.999f;
    h.one_minus_beta1 = 0.1f;
    h.one_minus_beta2 = 0.001f;
    h.eps = 1e-8f;
    h.step_size = static_cast<float>(1e-3 / (1.0 - std::pow(0.9, t)));
    h.bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(0.999, t)));
    h.decay = 1.0f;
    h.l2 = 0.0f;
    backend(gpu).adam_step(h, values, grads, m, v, nullptr, nonfinite);
  };
  step(1);
  const uint64_t after_first = allocator_stats(gpu).device_malloc_calls;
  for (int t = 2; t <= 20; ++t) step(t);
  cuda::synchronize(0);
  EXPECT_EQ(allocator_stats(gpu).device_malloc_calls, after_first);
}

// ---- CUDA graphs ----

// A captured sequence replays on new inputs written into the same buffers, and runs nothing at
// capture time.
TEST(CudaGraph, ReplaysOnNewInputs) {
  AXON_REQUIRE_GPU();
  const Device gpu = Device::cuda(0);
  Tensor x = Tensor::zeros({1000}, {DType::f32, gpu});
  Tensor y = Tensor::full({1000}, -5.0, {DType::f32, gpu});
  cuda::Graph graph(0);
  graph.capture([&] {
    Tensor twice = mul_scalar(x, 2.0);  // allocated inside the capture: from the graph's pool
    backend(gpu).unary(UnaryOp::add_scalar, twice, 1.0, y);
  });
  EXPECT_TRUE(graph.captured());
  EXPECT_EQ(y.to(Device::cpu()).to_vector()[0], -5.0f) << "the capture must not run the work";
  for (float value : {1.0f, 2.5f, -3.0f}) {
    x.copy_from(Tensor::full({1000}, value));
    graph.replay();
    const std::vector<float> out = y.to(Device::cpu()).to_vector();
    EXPECT_EQ(out.front(), 2.0f * value + 1.0f);
    EXPECT_EQ(out.back(), 2.0f * value + 1.0f);
  }
}

// Blocks the graph allocated stay its own: eager work after the capture gets other memory, so a
// replay cannot overwrite it.
TEST(CudaGraph, EagerWorkNeverSharesTheGraphsMemory) {
  AXON_REQUIRE_GPU();
  const Device gpu = Device::cuda(0);
  Tensor x = Tensor::full({4096}, 1.0, {DType::f32, gpu});
  Tensor out = Tensor::zeros({4096}, {DType::f32, gpu});
  cuda::Graph graph(0);
  graph.capture([&] {
    Tensor t = mul_scalar(x, 3.0);  // freed at the end of the capture, back to the graph's pool
    backend(gpu).binary(BinaryOp::add, t, x, out);
  });
  // Same size class as the graph's temporary: a shared cache would hand its block out here.
  Tensor eager = Tensor::full({4096}, 7.0, {DType::f32, gpu});
  graph.replay();
  graph.replay();
  EXPECT_EQ(eager.to(Device::cpu()).to_vector()[17], 7.0f);
  EXPECT_EQ(out.to(Device::cpu()).to_vector()[17], 4.0f);
}

// Work that waits for the device cannot be captured: the error names the device and the device
// stays usable.
TEST(CudaGraph, ASyncInsideTheCaptureIsAClearError) {
  AXON_REQUIRE_GPU();
  const Device gpu = Device::cuda(0);
  Tensor x = Tensor::full({8}, 2.0, {DType::f32, gpu});
  cuda::Graph graph(0);
  try {
    graph.capture([&] { (void)sum(x).item(); });
    FAIL() << "reading a value back during a capture must throw";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("cuda:0"));
  }
  EXPECT_FALSE(graph.captured());
  EXPECT_EQ(sum(x).item(), 16.0f);
  cuda::Graph second(0);
  EXPECT_THROW(second.replay(), std::logic_error);
}

// Capturable Adam (the step count on the device) takes the same steps as the host-derived one.
TEST(CudaGraph, CapturableAdamMatchesTheHostScalars) {
  AXON_REQUIRE_GPU();
  const Device gpu = Device::cuda(0);
  Tensor grads = Tensor::from_vector({5}, std::vector<float>{0.5f, -1.0f, 2.0f, 1e-3f, -0.25f}).to(gpu);
  Tensor a = Tensor::from_vector({5}, std::vector<float>{1, 2, 3, 4, 5}).to(gpu), b = a.clone();
  auto host = adam({.lr = 1e-2}), device = adam({.lr = 1e-2});
  device->set_capturable(true);
  for (int t = 0; t < 30; ++t) {
    host->step(a, grads);
    device->step(b, grads);
  }
  const std::vector<float> va = a.to(Device::cpu()).to_vector(), vb = b.to(Device::cpu()).to_vector();
  for (size_t i = 0; i < va.size(); ++i) EXPECT_NEAR(vb[i], va[i], 1e-6f * std::fabs(va[i])) << i;
}

// The trainer's graph mode trains like eager mode and makes no cudaMalloc call once captured.
TEST(CudaGraph, TrainerGraphModeMatchesEagerAndStopsAllocating) {
  AXON_REQUIRE_GPU();
  const Device gpu = Device::cuda(0);
  const data::Dataset train = data::synthetic_fashion_mnist(64 * 40 + 17, 3);  // a partial last batch
  Model model = input({-1, 784}) | dense(64, Activation::relu) | dense(10);
  auto run = [&](bool graph, uint64_t* mallocs_in_second_fit) {
    Parameters params = init(model, 1).to(gpu);
    auto opt = adam({.lr = 1e-3});
    auto comm = make_local_communicator();
    Trainer trainer(model, params, *opt, *comm,
                    {.epochs = 1, .batch_size = 64, .shuffle = true, .progress = false, .check_every = 7,
                     .cuda_graph = graph});
    TrainResult r = trainer.fit(train);
    const uint64_t before = allocator_stats(gpu).device_malloc_calls;
    r = trainer.fit(train);  // a second fit reuses the cache (and, with graphs, captures anew)
    if (mallocs_in_second_fit) *mallocs_in_second_fit = allocator_stats(gpu).device_malloc_calls - before;
    EXPECT_EQ(opt->steps(), 2 * 41);
    return std::make_pair(params.flat_values().to(Device::cpu()).to_vector(), r.epochs.back().train_loss);
  };
  uint64_t graph_mallocs = 0;
  const auto [eager_params, eager_loss] = run(false, nullptr);
  const auto [graph_params, graph_loss] = run(true, &graph_mallocs);
  EXPECT_NEAR(graph_loss, eager_loss, 1e-5 * std::fabs(eager_loss));
  ASSERT_EQ(graph_params.size(), eager_params.size());
  double max_diff = 0.0;
  for (size_t i = 0; i < eager_params.size(); ++i)
    max_diff = std::max(max_diff, std::fabs(static_cast<double>(graph_params[i]) - eager_params[i]));
  EXPECT_LT(max_diff, 1e-5);
  // The second fit captures anew, its private pool taking blocks the first one cached (they are
  // all of the same sizes), and replays allocate nothing: expected 0; a malloc per step would show
  // as 41 or more.
  EXPECT_LE(graph_mallocs, 4u);
}

TEST(CudaGraph, TrainerRefusesGraphModeOnTheCpu) {
  Model model = input({-1, 4}) | dense(2);
  Parameters params = init(model, 0);
  auto opt = adam({});
  auto comm = make_local_communicator();
  try {
    Trainer trainer(model, params, *opt, *comm, {.cuda_graph = true});
    FAIL() << "cuda_graph with CPU parameters must be refused";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("cuda_graph needs the parameters on a CUDA device, they are on cpu"));
  }
}

}  // namespace
}  // namespace axon
