// Every optimizer, schedule-free, on a GPU against the same optimizer on the CPU (the transforms run
// through the backend's element-wise kernels, so the device results equal the host ones to float
// rounding). Skips without a GPU, with the reason printed.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "axon/backend.h"
#include "axon/cuda.h"
#include "axon/optimizers.h"
#include "axon/random.h"

namespace axon {
namespace {

#define AXON_REQUIRE_GPU()                                                                          \
  do {                                                                                              \
    if (cuda::device_count() == 0)                                                                  \
      GTEST_SKIP() << (cuda::built_with_cuda() ? "no CUDA device is visible" : "built without CUDA"); \
  } while (0)

TEST(CudaOptimizers, EveryOptimizerStepsOnTheGpuLikeOnTheCpu) {
  AXON_REQUIRE_GPU();
  const Device gpu = Device::cuda(0);
  Generator gen(3);
  const Tensor p0 = normal({4097}, 0.0f, 1.0f, gen);
  std::vector<Tensor> grads;
  for (int t = 0; t < 10; ++t) grads.push_back(normal({4097}, 0.0f, 1.0f + static_cast<float>(t % 3), gen));
  for (const std::string& name : optimizer_names()) {
    SCOPED_TRACE(name);
    auto host = make_optimizer(name, 0.01), device = make_optimizer(name, 0.01);
    Tensor a = p0.clone(), b = p0.to(gpu);
    for (const Tensor& g : grads) {
      host->step(a, g);
      Tensor gd = g.to(gpu);
      device->step(b, gd);
    }
    EXPECT_EQ(device->nonfinite_flag().item(), 0.0f);
    const std::vector<float> want = a.to_vector(), got = b.to(Device::cpu()).to_vector();
    double worst = 0.0;
    for (size_t i = 0; i < want.size(); ++i)
      worst = std::max(worst, std::fabs(static_cast<double>(got[i]) - want[i]) / std::max(1.0, std::fabs(static_cast<double>(want[i]))));
    EXPECT_LE(worst, 1e-5);
    for (auto& [state, buffer] : device->state()) EXPECT_EQ(buffer->device(), gpu) << state;
  }
}

TEST(CudaOptimizers, NewElementwiseKernels) {
  AXON_REQUIRE_GPU();
  const Device gpu = Device::cuda(0);
  const std::vector<float> x{-2.5f, -0.0f, 0.0f, 3.0f, NAN};
  Tensor in = Tensor::from_vector({5}, x).to(gpu), out = Tensor::zeros({5}, {DType::f32, gpu});
  auto run = [&](UnaryOp op, double s) {
    backend(gpu).unary(op, in, s, out);
    return out.to(Device::cpu()).to_vector();
  };
  auto sign = run(UnaryOp::sign, 0.0);
  EXPECT_EQ(sign[0], -1.0f);
  EXPECT_EQ(sign[3], 1.0f);
  EXPECT_EQ(sign[2], 0.0f);
  EXPECT_TRUE(std::isnan(sign[4]));
  EXPECT_EQ(run(UnaryOp::abs, 0.0)[0], 2.5f);
  EXPECT_EQ(run(UnaryOp::max_scalar, 1.0)[0], 1.0f);
  EXPECT_EQ(run(UnaryOp::min_scalar, 1.0)[3], 1.0f);
  EXPECT_EQ(run(UnaryOp::sqrt, 0.0)[3], std::sqrt(3.0f));
  Tensor other = Tensor::full({5}, 1.0, {DType::f32, gpu});
  backend(gpu).binary(BinaryOp::maximum, in, other, out);
  auto mx = out.to(Device::cpu()).to_vector();
  EXPECT_EQ(mx[0], 1.0f);
  EXPECT_EQ(mx[3], 3.0f);
  EXPECT_TRUE(std::isnan(mx[4]));
}

}  // namespace
}  // namespace axon
