// The group-statistics normalization kernels (batch_norm, group_norm, instance_norm) and the
// shape kernels (axis_copy, permute, resize) of each backend (axon/backend.h), in files of their
// own: cpu/norm_shape_kernels.cpp and cuda/norm_shape_kernels.cu. The backends' classes forward
// to these.
#pragma once

#include <vector>

#include "axon/backend.h"

namespace axon::cpu_detail {
void group_norm(const Tensor& x, const Tensor* gamma, const Tensor* beta, const GroupNormParams& p, Tensor& y,
                Tensor& mean, Tensor& rstd, Tensor* running_mean, Tensor* running_var);
void group_norm_backward(const Tensor& x, const Tensor* gamma, const Tensor& g, const Tensor& mean, const Tensor& rstd,
                         const GroupNormParams& p, Tensor* dx, Tensor* dgamma, Tensor* dbeta);
void axis_copy(const Tensor& src, int64_t src_n, int64_t src_offset, Tensor& dst, int64_t dst_n, int64_t dst_offset,
               int64_t outer, int64_t inner, int64_t count);
void permute(const Tensor& x, const std::vector<int64_t>& perm, Tensor& out);
void resize(const Tensor& x, const ResizeParams& p, Tensor& out);
void resize_backward(const Tensor& g, const ResizeParams& p, Tensor& dx);
}  // namespace axon::cpu_detail

namespace axon::cuda_detail {
// Queued on `device`'s compute stream.
void group_norm(int device, const Tensor& x, const Tensor* gamma, const Tensor* beta, const GroupNormParams& p,
                Tensor& y, Tensor& mean, Tensor& rstd, Tensor* running_mean, Tensor* running_var);
void group_norm_backward(int device, const Tensor& x, const Tensor* gamma, const Tensor& g, const Tensor& mean,
                         const Tensor& rstd, const GroupNormParams& p, Tensor* dx, Tensor* dgamma, Tensor* dbeta);
void axis_copy(int device, const Tensor& src, int64_t src_n, int64_t src_offset, Tensor& dst, int64_t dst_n,
               int64_t dst_offset, int64_t outer, int64_t inner, int64_t count);
void permute(int device, const Tensor& x, const std::vector<int64_t>& perm, Tensor& out);
void resize(int device, const Tensor& x, const ResizeParams& p, Tensor& out);
void resize_backward(int device, const Tensor& g, const ResizeParams& p, Tensor& dx);
}  // namespace axon::cuda_detail
