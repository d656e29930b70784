// Sequence-model ops, differentiable: embedding lookup and scaled dot-product attention (the
// functional forms of the embedding, multi_head_attention and transformer_block layers;
// layers/include/axon/attention_layers.h).
#pragma once

#include <cstdint>

#include "axon/tensor.h"

namespace axon {

// Embedding lookup: out[..., :] = kernel[ids[...], :]. ids: i32 or i64 of any shape {batch, ...}
// (float ids are refused: convert with .to(DType::i64)); kernel {vocab, dim} f32, f64 or bf16 on
// ids' device. Returns {ids.shape..., dim} of kernel's dtype. torch.nn.functional.embedding.
// The gradient with respect to kernel is a scatter-add of the output gradient rows into the rows
// named by ids (ids repeated are summed; bf16 kernels accumulate in f32 and round once). ids get
// no gradient. Throws std::out_of_range naming the op, the id, its position and the vocabulary
// size when an id is outside [0, vocab) (ids on a GPU are copied to the host for this check),
// std::invalid_argument naming the shapes or dtypes otherwise.
Tensor embedding(const Tensor& ids, const Tensor& kernel);

// Options of scaled_dot_product_attention.
struct AttentionOptions {
  // Query i attends to keys j ≤ i only (the top-left aligned lower triangle, as PyTorch's
  // is_causal=True).
  bool causal = false;
  // Optional {batch, keys} of any dtype: a nonzero (true) entry marks a padding key that no query
  // attends to, as torch.nn.MultiheadAttention's key_padding_mask. Read on the host (copied there
  // when it lives on a GPU).
  Tensor key_padding_mask = Tensor();
  // Multiplies q·k; 0 means 1/√head_dim (Vaswani et al. 2017).
  double scale = 0.0;
};

// Attention (Vaswani et al. 2017, "Attention Is All You Need"):
//   out = softmax(scale · q kᵀ + mask) v
// q {batch, heads, queries, d}, k {batch, heads, keys, d}, v {batch, heads, keys, dv}, of one
// floating dtype (bf16 computes in f32) and one device; returns {batch, heads, queries, dv}. As
// torch.nn.functional.scaled_dot_product_attention with is_causal / a boolean mask, except that a
// query with no key left to attend to (every key masked) gives zeros and zero gradients where
// PyTorch gives NaN.
//
// Memory-efficient on every backend: the {queries, keys} score matrix is never materialised.
// The CPU kernel (tensor/src/cpu/attention_kernels.cpp) walks tiles of 64 queries × 64 keys (the
// tile products are OpenBLAS GEMMs) with an online softmax (Milakov & Gimelshein 2018) and keeps
// only the output and one log-sum-exp per query; the backward pass recomputes each tile's
// probabilities from them (FlashAttention, Dao et al. 2022, Algorithms 1 and 2). (batch, head)
// pairs are split over num_threads() threads; results do not depend on the thread count. The CUDA kernels do the same with one
// thread per query (and per key for dk, dv); compiled, not yet run on a GPU.
// Throws std::invalid_argument naming the op and the shapes, dtypes or devices at fault.
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const AttentionOptions& options = {});

}  // namespace axon
