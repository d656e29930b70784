// Checks shared by the op front ends: every message names the op and what is at fault.
#pragma once

#include <fmt/format.h>

#include <stdexcept>

#include "axon/backend.h"
#include "axon/tensor.h"

namespace axon::detail {

inline void check_floating(const char* op, const Tensor& t) {
  if (!is_floating(t.dtype()))
    throw std::invalid_argument(fmt::format("{}: dtype {} is not supported (f32, f64 or bf16; convert with .to(dtype))", op,
                                            dtype_name(t.dtype())));
}

// Same dtype and device, or an error naming both.
inline void check_same(const char* op, const Tensor& a, const Tensor& b) {
  if (a.device() != b.device())
    throw std::invalid_argument(fmt::format("{}: operands on different devices, {} and {} (move one with .to(device))", op,
                                            a.device().str(), b.device().str()));
  if (a.dtype() != b.dtype())
    throw std::invalid_argument(fmt::format("{}: operands of different dtypes, {} and {} (convert one with .to(dtype))", op,
                                            dtype_name(a.dtype()), dtype_name(b.dtype())));
}

inline int64_t normalize_axis(int64_t axis, int64_t dims, const char* op, const Shape& shape) {
  int64_t a = axis < 0 ? axis + dims : axis;
  if (a < 0 || a >= dims)
    throw std::out_of_range(fmt::format("{}: axis {} out of range for shape {}", op, axis, shape_str(shape)));
  return a;
}

inline void require_2d(const char* op, const Tensor& t, const char* what) {
  if (t.dim() != 2)
    throw std::invalid_argument(fmt::format("{}: {} must be 2-d, got shape {}", op, what, shape_str(t.shape())));
}

// Sums a gradient of the broadcast output shape down to an operand's shape.
inline Tensor reduce_to(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  Tensor out = Tensor::empty(shape, g.options());
  backend(g.device()).reduce_to(g, out);
  return out;
}

}  // namespace axon::detail
