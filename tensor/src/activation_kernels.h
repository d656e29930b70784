// The activation kernels of each backend (axon/backend.h: activation, activation_backward,
// log_sumexp), kept in files of their own: cpu/activation_kernels.cpp and
// cuda/activation_kernels.cu. The backends' classes forward to these.
#pragma once

#include "axon/backend.h"

namespace axon::cpu_detail {
void activation(ActivationOp op, const ActivationParams& p, const Tensor& x, Tensor& out);
void activation_backward(ActivationOp op, const ActivationParams& p, const Tensor& g, const Tensor& x, Tensor& out);
void log_sumexp(const Tensor& x, const AxisSplit& s, Tensor& out);
}  // namespace axon::cpu_detail

namespace axon::cuda_detail {
// Queued on `device`'s compute stream.
void activation(int device, ActivationOp op, const ActivationParams& p, const Tensor& x, Tensor& out);
void activation_backward(int device, ActivationOp op, const ActivationParams& p, const Tensor& g, const Tensor& x,
                         Tensor& out);
void log_sumexp(int device, const Tensor& x, const AxisSplit& s, Tensor& out);
}  // namespace axon::cuda_detail
