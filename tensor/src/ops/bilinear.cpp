// bilinear (axon/bilinear.h) from matmul, permute and a broadcast product.
#include "axon/bilinear.h"

#include <fmt/format.h>

#include <stdexcept>

#include "axon/ops.h"
#include "axon/shape_ops.h"
#include "common.h"

namespace axon {

Shape bilinear_output_shape(const Shape& x1, const Shape& x2, const Shape& kernel) {
  auto fail = [&](const std::string& why) {
    return std::invalid_argument(fmt::format("bilinear: inputs of shapes {} and {} with kernel of shape {}: {}",
                                             shape_str(x1), shape_str(x2), shape_str(kernel), why));
  };
  if (x1.size() < 2 || x2.size() < 2) throw fail("each input must have rank ≥ 2 ({..., features})");
  if (x1.size() != x2.size() || !std::equal(x1.begin(), x1.end() - 1, x2.begin()))
    throw fail("the inputs must agree on every dim but the last");
  if (kernel.size() != 3) throw fail("the kernel must be {units, in1, in2}");
  if (kernel[1] != x1.back() || kernel[2] != x2.back())
    throw fail(fmt::format("the kernel expects {} and {} features", kernel[1], kernel[2]));
  Shape out(x1.begin(), x1.end() - 1);
  out.push_back(kernel[0]);
  return out;
}

Tensor bilinear(const Tensor& x1, const Tensor& x2, const Tensor& kernel, const Tensor& bias) {
  detail::check_floating("bilinear", x1);
  if (!kernel.defined()) throw std::invalid_argument("bilinear: kernel is undefined");
  detail::check_same("bilinear", x1, x2);
  detail::check_same("bilinear", x1, kernel);
  const Shape out_shape = bilinear_output_shape(x1.shape(), x2.shape(), kernel.shape());
  const int64_t units = kernel.size(0), in1 = kernel.size(1), in2 = kernel.size(2);
  if (bias.defined()) {
    detail::check_same("bilinear", x1, bias);
    if (bias.dim() != 1 || bias.size(0) != units)
      throw std::invalid_argument(fmt::format("bilinear: bias of shape {} does not match kernel of shape {} (expects {{{}}})",
                                              shape_str(bias.shape()), shape_str(kernel.shape()), units));
  }
  const int64_t rows = x1.numel() / in1;
  // t[r, u, j] = Σ_i x1[r, i] · kernel[u, i, j]: one GEMM with the kernel as {in1, units·in2}.
  const Tensor k = permute(kernel, {1, 0, 2}).reshape({in1, units * in2});
  const Tensor t = matmul(x1.reshape({rows, in1}), k).reshape({rows, units, in2});
  // y[r, u] = Σ_j t[r, u, j] · x2[r, j].
  Tensor y = sum(mul(t, x2.reshape({rows, 1, in2})), 2);
  if (bias.defined()) y = add(y, bias);
  return y.reshape(out_shape);
}

}  // namespace axon
