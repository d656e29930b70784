// The CPU convolution's two paths (axon/conv_ops.h): oneDNN when Axon was built with it, and
// im2col + OpenBLAS GEMM. Tests of conv run each case under both, so the fallback stays tested
// on a machine that has oneDNN.
#pragma once

#include <string>
#include <vector>

#include "axon/conv_ops.h"

namespace axon::testing {

struct ConvPath {
  bool onednn;
  std::string name() const { return onednn ? "oneDNN" : "im2col+GEMM"; }
};

inline std::vector<ConvPath> conv_paths() {
  if (onednn_available()) return {{true}, {false}};
  return {{false}};
}

// Selects a path for its lifetime, then restores the previous setting.
class UseConvPath {
 public:
  explicit UseConvPath(ConvPath p) : was_(onednn_enabled()) { set_onednn_enabled(p.onednn); }
  ~UseConvPath() { set_onednn_enabled(was_); }
  UseConvPath(const UseConvPath&) = delete;
  UseConvPath& operator=(const UseConvPath&) = delete;

 private:
  bool was_;
};

}  // namespace axon::testing
