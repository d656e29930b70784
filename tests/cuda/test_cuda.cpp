// axon::cuda tests. Those that need a GPU skip cleanly on a machine without one.
#include <gtest/gtest.h>

#include <regex>
#include <stdexcept>
#include <vector>

#include "axon/cuda.h"

namespace {

#define AXON_REQUIRE_GPU()                                                     \
  do {                                                                         \
    if (axon::cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device";     \
  } while (0)

TEST(Cuda, DeviceCountNeverThrows) {
  int count = -1;
  EXPECT_NO_THROW(count = axon::cuda::device_count());
  EXPECT_GE(count, 0);
  EXPECT_EQ(axon::cuda::device_count(), count);  // a failed query must not leave a sticky error
}

TEST(Cuda, NcclVersionMatchesBuild) {
  std::string version = axon::cuda::nccl_version();
#ifdef AXON_HAS_NCCL
  EXPECT_TRUE(std::regex_match(version, std::regex(R"(\d+\.\d+\.\d+)"))) << "got '" << version << "'";
#else
  EXPECT_EQ(version, "");
#endif
}

TEST(Cuda, ScaleOfNothingIsANoOp) {
  EXPECT_NO_THROW(axon::cuda::scale_on_device(nullptr, 0, 2.0f));
}

TEST(Cuda, NullDataIsRejected) {
  EXPECT_THROW(axon::cuda::scale_on_device(nullptr, 4, 2.0f), std::invalid_argument);
}

TEST(Cuda, WithoutGpuCallsThrowAndLeaveDataAlone) {
  if (axon::cuda::device_count() > 0) GTEST_SKIP() << "a CUDA device is present";
  std::vector<float> data = {1.0f, 2.0f, 3.0f};
  EXPECT_THROW(axon::cuda::scale_on_device(data.data(), data.size(), 2.0f), std::runtime_error);
  EXPECT_EQ(data, (std::vector<float>{1.0f, 2.0f, 3.0f}));
  EXPECT_THROW(axon::cuda::device_name(0), std::runtime_error);
}

TEST(Cuda, DeviceName) {
  AXON_REQUIRE_GPU();
  EXPECT_FALSE(axon::cuda::device_name(0).empty());
  EXPECT_THROW(axon::cuda::device_name(axon::cuda::device_count()), std::runtime_error);
  EXPECT_THROW(axon::cuda::device_name(-1), std::runtime_error);
}

TEST(Cuda, ScaleSmall) {
  AXON_REQUIRE_GPU();
  std::vector<float> data = {1.0f, -2.0f, 0.5f, 0.0f, 3.0f};
  axon::cuda::scale_on_device(data.data(), data.size(), 4.0f);
  EXPECT_EQ(data, (std::vector<float>{4.0f, -8.0f, 2.0f, 0.0f, 12.0f}));
}

TEST(Cuda, ScaleManyBlocks) {
  AXON_REQUIRE_GPU();
  // More elements than one grid of 65535 blocks x 256 threads covers, plus an odd tail.
  const size_t n = 65535u * 256u * 2u + 7u;
  std::vector<float> data(n);
  for (size_t i = 0; i < n; ++i) data[i] = static_cast<float>(i % 1000) - 500.0f;
  axon::cuda::scale_on_device(data.data(), n, 0.5f);
  for (size_t i = 0; i < n; ++i) {
    ASSERT_EQ(data[i], (static_cast<float>(i % 1000) - 500.0f) * 0.5f) << "at index " << i;
  }
}

}  // namespace
