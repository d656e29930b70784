// Front ends of embedding and scaled_dot_product_attention (axon/attention_ops.h): checks, the
// backend kernels (tensor/src/cpu/attention_kernels.cpp, cuda/attention_kernels.cu), autograd.
#include <cmath>

#include "axon/attention_ops.h"
#include "axon/autograd.h"
#include "common.h"

namespace axon {

Tensor embedding(const Tensor& ids, const Tensor& kernel) {
  constexpr const char* op = "embedding";
  if (!ids.defined() || !kernel.defined()) throw std::invalid_argument("embedding: ids or kernel is undefined");
  if (ids.dtype() != DType::i32 && ids.dtype() != DType::i64)
    throw std::invalid_argument(fmt::format("embedding: ids must be i32 or i64, got {} of shape {} (convert with "
                                            ".to(DType::i64))",
                                            dtype_name(ids.dtype()), shape_str(ids.shape())));
  detail::check_floating(op, kernel);
  if (kernel.dim() != 2)
    throw std::invalid_argument(
        fmt::format("embedding: kernel must be {{vocab, dim}}, got shape {}", shape_str(kernel.shape())));
  if (ids.device() != kernel.device())
    throw std::invalid_argument(fmt::format("embedding: ids on {} but kernel on {} (move one with .to(device))",
                                            ids.device().str(), kernel.device().str()));
  const int64_t vocab = kernel.size(0), dim = kernel.size(1);
  Tensor flat = ids.reshape({ids.numel()}).to(DType::i64).detach();
  // Range check on the host: an id outside the table would read (forward) or write (backward)
  // outside it.
  {
    Tensor host = flat.to(Device::cpu());
    const int64_t* p = host.data_as<int64_t>();
    for (int64_t i = 0; i < host.numel(); ++i)
      if (p[i] < 0 || p[i] >= vocab)
        throw std::out_of_range(fmt::format("embedding: id {} at flat position {} of ids {} is outside [0, {}) (the "
                                            "vocabulary size of kernel {})",
                                            p[i], i, shape_str(ids.shape()), vocab, shape_str(kernel.shape())));
  }
  Tensor rows = Tensor::empty({flat.numel(), dim}, kernel.options());
  if (rows.numel() > 0) backend(kernel.device()).gather_rows(kernel, flat, rows);
  Shape out_shape = ids.shape();
  out_shape.push_back(dim);
  Tensor out = rows.reshape(out_shape).detach();
  return record(op, out, {kernel}, [flat, kshape = kernel.shape(), kopt = kernel.options()](const Tensor& g, GradSlots& grads) {
    if (!grads.needs(0)) return;
    // bf16 tables accumulate in f32 and round once.
    const DType acc = kopt.dtype == DType::bf16 ? DType::f32 : kopt.dtype;
    Tensor dk = Tensor::zeros(kshape, {acc, kopt.device});
    Tensor gf = g.to(acc).reshape({flat.numel(), kshape[1]}).detach();
    if (gf.numel() > 0) backend(kopt.device).index_add_rows(gf, flat, dk);
    grads.add(0, dk.to(kopt.dtype));
  });
}

namespace {

Tensor attention_impl(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                      const AttentionParams& p) {
  Tensor out = Tensor::empty({p.batch, p.heads, p.lq, p.dv}, q.options());
  Tensor lse = Tensor::empty({p.batch, p.heads, p.lq}, q.options());
  if (out.numel() > 0) backend(q.device()).attention(q, k, v, mask.defined() ? &mask : nullptr, p, out, lse);
  return record("scaled_dot_product_attention", out, {q, k, v},
                [q = q.detach(), k = k.detach(), v = v.detach(), mask, out = out.detach(), lse, p](const Tensor& g,
                                                                                                  GradSlots& grads) {
                  Tensor dq = Tensor::empty(q.shape(), q.options()), dk = Tensor::empty(k.shape(), k.options()),
                         dv = Tensor::empty(v.shape(), v.options());
                  if (out.numel() > 0 && k.numel() > 0) {
                    backend(q.device()).attention_backward(q, k, v, mask.defined() ? &mask : nullptr, out, lse,
                                                           g.detach(), p, dq, dk, dv);
                  } else {
                    dq.fill(0.0);
                    dk.fill(0.0);
                    dv.fill(0.0);
                  }
                  if (grads.needs(0)) grads.add(0, dq);
                  if (grads.needs(1)) grads.add(1, dk);
                  if (grads.needs(2)) grads.add(2, dv);
                });
}

}  // namespace

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& options) {
  constexpr const char* op = "scaled_dot_product_attention";
  if (!q.defined() || !k.defined() || !v.defined()) throw std::invalid_argument(fmt::format("{}: q, k or v is undefined", op));
  detail::check_floating(op, q);
  detail::check_same(op, q, k);
  detail::check_same(op, q, v);
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4)
    throw std::invalid_argument(fmt::format("{}: q, k and v must be 4-d {{batch, heads, length, head_dim}}, got q {}, "
                                            "k {}, v {}",
                                            op, shape_str(q.shape()), shape_str(k.shape()), shape_str(v.shape())));
  if (k.size(0) != q.size(0) || v.size(0) != q.size(0) || k.size(1) != q.size(1) || v.size(1) != q.size(1) ||
      k.size(3) != q.size(3) || v.size(2) != k.size(2))
    throw std::invalid_argument(fmt::format("{}: shapes do not agree: q {} {{batch, heads, queries, d}}, k {} {{batch, "
                                            "heads, keys, d}}, v {} {{batch, heads, keys, dv}}",
                                            op, shape_str(q.shape()), shape_str(k.shape()), shape_str(v.shape())));
  AttentionParams p;
  p.batch = q.size(0);
  p.heads = q.size(1);
  p.lq = q.size(2);
  p.lk = k.size(2);
  p.d = q.size(3);
  p.dv = v.size(3);
  p.causal = options.causal;
  if (!std::isfinite(options.scale) || options.scale < 0)
    throw std::invalid_argument(fmt::format("{}: scale must be finite and ≥ 0 (0: 1/√d), got {}", op, options.scale));
  p.scale = options.scale > 0 ? options.scale : (p.d > 0 ? 1.0 / std::sqrt(static_cast<double>(p.d)) : 1.0);
  Tensor mask;
  if (options.key_padding_mask.defined()) {
    const Tensor& m = options.key_padding_mask;
    if (m.dim() != 2 || m.size(0) != p.batch || m.size(1) != p.lk)
      throw std::invalid_argument(fmt::format("{}: key_padding_mask of shape {} does not match {{batch, keys}} = {{{}, {}}} "
                                              "of k {}",
                                              op, shape_str(m.shape()), p.batch, p.lk, shape_str(k.shape())));
    // Nonzero = padding, as an i32 0/1 table on q's device (float masks: any nonzero value).
    Tensor host = m.detach().to(Device::cpu()).to(DType::f64);
    std::vector<int32_t> flags(static_cast<size_t>(host.numel()));
    const double* hp = host.data_as<double>();
    for (size_t i = 0; i < flags.size(); ++i) flags[i] = hp[i] != 0.0 ? 1 : 0;
    mask = Tensor::from_vector(m.shape(), flags, {DType::i32, q.device()});
  }
  if (q.dtype() == DType::bf16) {  // computed in f32, rounded once
    Tensor out = attention_impl(q.to(DType::f32), k.to(DType::f32), v.to(DType::f32), mask, p);
    return out.to(DType::bf16);
  }
  return attention_impl(q, k, v, mask, p);
}

}  // namespace axon
