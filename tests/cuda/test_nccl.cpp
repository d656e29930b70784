// The NCCL backend at world size 1 (a GPU machine with one GPU): every collective, blocking and
// asynchronous, on GPU tensors in f32 and bf16, through the communicator's own stream. Skips, with
// the reason, without a GPU or without NCCL in this build.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <vector>

#include "axon/communicator.h"
#include "axon/cuda.h"

namespace axon {
namespace {

#define AXON_REQUIRE_NCCL()                                                                          \
  do {                                                                                               \
    if (cuda::device_count() == 0)                                                                   \
      GTEST_SKIP() << (cuda::built_with_cuda() ? "no CUDA device is visible" : "built without CUDA"); \
    if (nccl_version().empty()) GTEST_SKIP() << "built without NCCL";                                 \
  } while (0)

Tensor gpu_values(int64_t n, DType dtype) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = static_cast<float>((i % 11) - 5);
  return Tensor::from_vector({n}, v).to(dtype).to(Device::cuda(0));
}

class NcclWorldOfOne : public ::testing::TestWithParam<DType> {};

TEST_P(NcclWorldOfOne, EveryCollectiveBlockingAndAsyncLeavesTheValues) {
  AXON_REQUIRE_NCCL();
  const DType dtype = GetParam();
  auto bootstrap = make_local_communicator();
  auto nccl = make_nccl_communicator(*bootstrap, Device::cuda(0));
  EXPECT_EQ(nccl->backend(), "nccl");
  const std::vector<float> want = gpu_values(1001, dtype).to(DType::f32).to_vector();
  for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max, ReduceOp::min}) {
    Tensor a = gpu_values(1001, dtype), b = gpu_values(1001, dtype);
    nccl->allreduce(a, op);
    std::shared_ptr<Work> w = nccl->allreduce_async(b, op);
    w->wait();
    EXPECT_EQ(a.to(DType::f32).to_vector(), want) << reduce_op_name(op);
    EXPECT_EQ(b.to(DType::f32).to_vector(), want) << reduce_op_name(op);
  }
  Tensor in = gpu_values(1001, dtype), out = Tensor::zeros({1001}, TensorOptions{dtype, Device::cuda(0)});
  nccl->reduce_scatter_async(in, out, ReduceOp::sum)->wait();
  EXPECT_EQ(out.to(DType::f32).to_vector(), want);
  Tensor gathered = Tensor::zeros({1001}, TensorOptions{dtype, Device::cuda(0)});
  std::shared_ptr<Work> g = nccl->allgather_async(in, gathered);
  while (!g->test()) {
  }
  g->wait();
  EXPECT_EQ(gathered.to(DType::f32).to_vector(), want);
  Tensor c = gpu_values(7, dtype);
  nccl->broadcast_async(c, 0)->wait();
  EXPECT_EQ(c.to(DType::f32).to_vector(), std::vector<float>(want.begin(), want.begin() + 7));
  Tensor wrong = Tensor::zeros({1000}, TensorOptions{dtype, Device::cuda(0)});
  EXPECT_THROW(nccl->reduce_scatter(in, wrong), CommError);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, NcclWorldOfOne, ::testing::Values(DType::f32, DType::bf16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace axon
