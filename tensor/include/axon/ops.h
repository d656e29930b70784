// Differentiable tensor operations. Each one computes eagerly and records its backward.
//
// Binary element-wise ops broadcast like NumPy: shapes are aligned at the right, and a dimension of
// size 1 (or a missing one) stretches to match the other.
//
// Every op runs on its operands' device (axon/backend.h) in their dtype: f32, f64 or bf16 (bf16
// computes in f32 and rounds each result once). Operands of two dtypes or two devices, and integer
// operands, are errors (std::invalid_argument) naming the op and both dtypes or devices.
#pragma once

#include <cstdint>
#include <vector>

#include "axon/tensor.h"

namespace axon {

// ---- element-wise, broadcasting ----
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add_scalar(const Tensor& a, float s);
Tensor mul_scalar(const Tensor& a, float s);

inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator+(const Tensor& a, float s) { return add_scalar(a, s); }
inline Tensor operator-(const Tensor& a, float s) { return add_scalar(a, -s); }
inline Tensor operator*(const Tensor& a, float s) { return mul_scalar(a, s); }
inline Tensor operator*(float s, const Tensor& a) { return mul_scalar(a, s); }

// The shape two operands broadcast to; throws naming both shapes when they cannot.
Shape broadcast_shape(const Shape& a, const Shape& b);

// ---- element-wise, unary ----
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor square(const Tensor& x);
inline Tensor operator-(const Tensor& x) { return neg(x); }

// ---- reductions ----
Tensor sum(const Tensor& x);                                      // all elements -> shape {}
Tensor sum(const Tensor& x, int64_t axis, bool keepdim = false);
Tensor mean(const Tensor& x);
Tensor mean(const Tensor& x, int64_t axis, bool keepdim = false);
// Index of the largest value in each row of x {rows, cols}: i64 {rows} on x's device (the first
// index on ties). Not differentiable.
Tensor argmax(const Tensor& x);
// The same, copied to the host.
std::vector<int64_t> argmax_rows(const Tensor& x);
// One f32 element on x's device: 1 when every element of x is finite, else 0 (no host sync).
Tensor all_finite(const Tensor& x);

// ---- indexing ----
// The rows of src {n, ...} at the i64 indices {k} on src's device: {k, ...}, any dtype. Not
// differentiable. Indices on the CPU are range-checked (std::out_of_range naming the index);
// on a GPU they are trusted.
Tensor gather_rows(const Tensor& src, const Tensor& indices);

// ---- linear algebra (OpenBLAS) ----
Tensor matmul(const Tensor& a, const Tensor& b);  // {m, k} x {k, n} -> {m, n}
Tensor transpose(const Tensor& x);                // 2-d, copies
// Fused dense layer: x {batch, in} times kernel {in, out} plus bias {out}. bias may be undefined.
Tensor linear(const Tensor& x, const Tensor& kernel, const Tensor& bias);

// ---- normalized exponentials ----
Tensor softmax(const Tensor& x, int64_t axis = -1);
Tensor log_softmax(const Tensor& x, int64_t axis = -1);

}  // namespace axon
