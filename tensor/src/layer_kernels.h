// The dropout and normalization kernels of each backend (axon/backend.h: dropout, norm,
// norm_backward), in files of their own: cpu/layer_kernels.cpp and cuda/layer_kernels.cu. The
// backends' classes forward to these.
#pragma once

#include "axon/backend.h"

namespace axon::cpu_detail {
void dropout(const Tensor& x, const DropoutParams& p, Tensor& out);
void norm(const Tensor& x, const Tensor& gamma, const Tensor* beta, const AxisSplit& s, const NormParams& p, Tensor& y,
          Tensor& mean, Tensor& rstd);
void norm_backward(const Tensor& x, const Tensor& gamma, const Tensor& g, const Tensor& mean, const Tensor& rstd,
                   const AxisSplit& s, const NormParams& p, Tensor* dx, Tensor* dgamma, Tensor* dbeta);
}  // namespace axon::cpu_detail

namespace axon::cuda_detail {
// Queued on `device`'s compute stream.
void dropout(int device, const Tensor& x, const DropoutParams& p, Tensor& out);
void norm(int device, const Tensor& x, const Tensor& gamma, const Tensor* beta, const AxisSplit& s, const NormParams& p,
          Tensor& y, Tensor& mean, Tensor& rstd);
void norm_backward(int device, const Tensor& x, const Tensor& gamma, const Tensor& g, const Tensor& mean,
                   const Tensor& rstd, const AxisSplit& s, const NormParams& p, Tensor* dx, Tensor* dgamma,
                   Tensor* dbeta);
}  // namespace axon::cuda_detail
