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
#include "axon/cuda.h"
#include "axon/losses.h"
#include "axon/model.h"
#include "axon/ops.h"

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

}  // namespace
}  // namespace axon
