// Shared by the op tests that compare against fixtures on every device.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "axon/cuda.h"
#include "axon/tensor.h"

namespace axon::testing {

// The CPU and every visible CUDA device.
inline std::vector<Device> devices() {
  std::vector<Device> d{Device::cpu()};
  for (int k = 0; k < cuda::device_count(); ++k) d.push_back(Device::cuda(k));
  return d;
}

// |got - want| <= atol + rtol·|want| element by element, naming `what` and the element on failure.
inline void expect_close(const std::vector<double>& got, const std::vector<double>& want, double rtol, double atol,
                         const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], atol + rtol * std::abs(want[i])) << what << " element " << i;
}

}  // namespace axon::testing
