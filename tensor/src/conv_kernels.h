// The convolution and pooling kernels of each backend (axon/backend.h: im2col, col2im, pool,
// pool_backward, batched_transpose), in files of their own: cpu/conv_kernels.cpp and
// cuda/conv_kernels.cu. The backends' classes forward to these. All run channels last.
#pragma once

#include "axon/backend.h"

namespace axon::cpu_detail {
void im2col(const Tensor& x, const ConvGeometry& g, int64_t group, Tensor& col);
void col2im(const Tensor& col, const ConvGeometry& g, int64_t group, Tensor& dx);
void pool(PoolKind kind, const Tensor& x, const ConvGeometry& g, Tensor& out, Tensor* argmax);
void pool_backward(PoolKind kind, const Tensor& grad, const ConvGeometry& g, const Tensor* argmax, Tensor& dx);
void batched_transpose(const Tensor& x, int64_t batch, int64_t rows, int64_t cols, Tensor& out);
}  // namespace axon::cpu_detail

namespace axon::cuda_detail {
// Queued on `device`'s compute stream.
void im2col(int device, const Tensor& x, const ConvGeometry& g, int64_t group, Tensor& col);
void col2im(int device, const Tensor& col, const ConvGeometry& g, int64_t group, Tensor& dx);
void pool(int device, PoolKind kind, const Tensor& x, const ConvGeometry& g, Tensor& out, Tensor* argmax);
void pool_backward(int device, PoolKind kind, const Tensor& grad, const ConvGeometry& g, const Tensor* argmax,
                   Tensor& dx);
void batched_transpose(int device, const Tensor& x, int64_t batch, int64_t rows, int64_t cols, Tensor& out);
}  // namespace axon::cuda_detail
