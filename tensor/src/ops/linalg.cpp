// Matrix products (GEMM through the device's BLAS: OpenBLAS or cuBLAS) and transpose.
#include <limits>

#include "axon/autograd.h"
#include "axon/ops.h"
#include "common.h"

namespace axon {

using detail::check_floating;
using detail::check_same;
using detail::require_2d;

Tensor matmul(const Tensor& a, const Tensor& b) {
  require_2d("matmul", a, "left operand");
  require_2d("matmul", b, "right operand");
  check_same("matmul", a, b);
  check_floating("matmul", a);
  if (a.size(1) != b.size(0))
    throw std::invalid_argument(
        fmt::format("matmul: shapes {} and {} do not chain (inner sizes differ)", shape_str(a.shape()), shape_str(b.shape())));
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  Tensor out = Tensor::empty({m, n}, a.options());
  Backend& be = backend(a.device());
  be.gemm(false, false, m, n, k, 1.0f, a, b, 0.0f, out);
  return record("matmul", out, {a, b}, [a, b, m, k, n](const Tensor& g, GradSlots& grads) {
    Backend& be = backend(g.device());
    float beta = 0.0f;
    if (grads.needs(0)) {  // dA = dC · Bᵀ
      Tensor ga = grads.target(0, a.shape(), a.options(), beta);
      be.gemm(false, true, m, k, n, 1.0f, g, b, beta, ga);
    }
    if (grads.needs(1)) {  // dB = Aᵀ · dC
      Tensor gb = grads.target(1, b.shape(), b.options(), beta);
      be.gemm(true, false, k, n, m, 1.0f, a, g, beta, gb);
    }
  });
}

Tensor transpose(const Tensor& x) {
  require_2d("transpose", x, "input");
  check_floating("transpose", x);
  Tensor out = Tensor::empty({x.size(1), x.size(0)}, x.options());
  if (out.numel() > 0) backend(x.device()).transpose2d(x, out);
  return record("transpose", out, {x}, [](const Tensor& g, GradSlots& grads) { grads.add(0, transpose(g)); });
}

Tensor linear(const Tensor& x, const Tensor& kernel, const Tensor& bias) {
  require_2d("linear", x, "input");
  require_2d("linear", kernel, "kernel");
  check_same("linear", x, kernel);
  check_floating("linear", x);
  if (x.size(1) != kernel.size(0))
    throw std::invalid_argument(fmt::format("linear: input of shape {} does not match kernel of shape {} (expects {{*, {}}})",
                                            shape_str(x.shape()), shape_str(kernel.shape()), kernel.size(0)));
  if (bias.defined()) {
    check_same("linear", x, bias);
    if (bias.dim() != 1 || bias.size(0) != kernel.size(1))
      throw std::invalid_argument(fmt::format("linear: bias of shape {} does not match kernel of shape {}",
                                              shape_str(bias.shape()), shape_str(kernel.shape())));
  }
  const int64_t batch = x.size(0), in = x.size(1), units = kernel.size(1);
  Tensor out = Tensor::empty({batch, units}, x.options());
  Backend& be = backend(x.device());
  // Start from the bias in every row so the GEMM can add onto it (beta = 1): one pass, no temporary.
  float beta = 0.0f;
  if (bias.defined() && out.numel() > 0) {
    Tensor zero = Tensor::zeros({}, x.options());
    be.binary(BinaryOp::add, bias, zero, out);
    beta = 1.0f;
  }
  if (in == 0) {
    if (!bias.defined()) out.fill(0.0);
  } else {
    be.gemm(false, false, batch, units, in, 1.0f, x, kernel, beta, out);
  }
  return record("linear", out, {x, kernel, bias}, [x, kernel, batch, in, units](const Tensor& g, GradSlots& grads) {
    Backend& be = backend(g.device());
    float beta = 0.0f;
    if (grads.needs(0)) {  // dx = g · Wᵀ
      Tensor gx = grads.target(0, x.shape(), x.options(), beta);
      be.gemm(false, true, batch, in, units, 1.0f, g, kernel, beta, gx);
    }
    if (grads.needs(1)) {  // dW = xᵀ · g
      Tensor gw = grads.target(1, kernel.shape(), kernel.options(), beta);
      be.gemm(true, false, in, units, batch, 1.0f, x, g, beta, gw);
    }
    if (grads.needs(2)) {  // db = column sums of g
      Tensor gb = grads.target(2, {units}, g.options(), beta);
      be.sum_axis(g, AxisSplit{1, batch, units}, beta, gb);
    }
  });
}

}  // namespace axon
