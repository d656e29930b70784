// The embedding-gradient and attention kernels of each backend (axon/backend.h: index_add_rows,
// attention, attention_backward), in files of their own: cpu/attention_kernels.cpp and
// cuda/attention_kernels.cu. The backends' classes forward to these.
#pragma once

#include "axon/backend.h"

namespace axon::cpu_detail {
void index_add_rows(const Tensor& src, const Tensor& indices, Tensor& out);
void attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* mask, const AttentionParams& p,
               Tensor& out, Tensor& lse);
void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* mask, const Tensor& out,
                        const Tensor& lse, const Tensor& dout, const AttentionParams& p, Tensor& dq, Tensor& dk,
                        Tensor& dv);
}  // namespace axon::cpu_detail

namespace axon::cuda_detail {
// Queued on `device`'s compute stream.
void index_add_rows(int device, const Tensor& src, const Tensor& indices, Tensor& out);
void attention(int device, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* mask,
               const AttentionParams& p, Tensor& out, Tensor& lse);
void attention_backward(int device, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* mask,
                        const Tensor& out, const Tensor& lse, const Tensor& dout, const AttentionParams& p, Tensor& dq,
                        Tensor& dk, Tensor& dv);
}  // namespace axon::cuda_detail
