// Shared by the op tests that compare against fixtures on every device.
#pragma once

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "axon/conv_ops.h"
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

// tests/fixtures/<file>, parsed. A missing file throws naming it: an empty fixture would let a
// test loop over no cases and pass without checking anything.
inline nlohmann::json load_fixture(const std::string& file) {
  std::ifstream in(std::string(AXON_SOURCE_DIR) + "/tests/fixtures/" + file);
  if (!in) throw std::runtime_error("missing fixture tests/fixtures/" + file);
  return nlohmann::json::parse(in);
}

// The message of the exception f throws, or "(no error)".
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

// A fixture's padding: "same", "valid", or explicit [[before, after], ...] pairs.
inline Padding parse_padding(const nlohmann::json& p) {
  if (p.is_string()) return p == "same" ? Padding::same() : Padding::valid();
  std::vector<std::pair<int64_t, int64_t>> pairs;
  for (const nlohmann::json& q : p) pairs.emplace_back(q[0].get<int64_t>(), q[1].get<int64_t>());
  return Padding::explicit_pairs(pairs);
}

}  // namespace axon::testing
