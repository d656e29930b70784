// Sequence layers and their builders: embedding (the seed's Axon.embedding), tied_dense (a dense
// output layer sharing an embedding's kernel: weight tying), multi_head_attention, and
// transformer_block, a pre-norm (GPT-2) block made only of public layers. The functions they run,
// with their formulas and references, are in axon/attention_ops.h.
//
//   Model ids = input({-1, 64});                       // {batch, time} of i32 or i64 token ids
//   Model emb = ids | embedding(96, 128);              // {batch, time, 128}
//   Model h = emb | transformer_block({.num_heads = 4}) | transformer_block({.num_heads = 4});
//   Model logits = h | layer_norm() | tied_dense(emb); // {batch, time, 96}, kernel shared with emb
//
// Errors (std::invalid_argument) name the layer, its options and the shapes: at build time for
// options alone (num_heads < 1), when the model is planned (init, summary) for what depends on
// the input (d_model not divisible by num_heads, a mask that is not {batch, time}).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "axon/attention_ops.h"
#include "axon/layer.h"
#include "axon/model.h"  // LayerStep (model.h includes this header at its end)

namespace axon {

// ---- embedding ----
struct EmbeddingOptions {
  Initializer kernel_initializer = initializers::uniform();  // the seed's: U(−0.01, 0.01)
};
// ids {batch, ...} (i32 or i64) -> {batch, ..., embedding_size}; param kernel {vocab_size,
// embedding_size}. An id outside [0, vocab_size) throws std::out_of_range naming the layer, the id
// and the vocabulary size. The seed's Axon.embedding; torch.nn.Embedding.
class EmbeddingLayer : public Layer {
 public:
  EmbeddingLayer(int64_t vocab_size, int64_t embedding_size, EmbeddingOptions options);
  std::string op() const override { return "embedding"; }
  Shape output_shape(const std::vector<Shape>& inputs) const override;
  std::vector<ParamSpec> params(const std::vector<Shape>& inputs) const override;
  Tensor forward(const std::vector<Tensor>& inputs, std::span<const Tensor> params, const ForwardContext&) const override;
  int64_t vocab_size() const { return vocab_; }
  int64_t embedding_size() const { return dim_; }

 private:
  int64_t vocab_, dim_;
  EmbeddingOptions options_;
};
LayerStep embedding(int64_t vocab_size, int64_t embedding_size, EmbeddingOptions options = {});

// ---- weight tying ----
// x {batch, ..., embedding_size} -> {batch, ..., vocab_size} = x · kernelᵀ, kernel the embedding
// layer's own {vocab_size, embedding_size} tensor (Press & Wolf 2017, "Using the Output Embedding
// to Improve Language Models"; GPT-2's lm_head). The layer has no parameter of its own: the
// kernel is one tensor used twice, so its gradient is the sum of both uses. `embedding_model`
// must be a model whose output layer is an embedding; it becomes a second graph input of this
// layer (ordering only: its value is not used), so plan() always sees the owner first.
class TiedDenseLayer : public Layer {
 public:
  TiedDenseLayer(int64_t vocab_size, int64_t embedding_size) : vocab_(vocab_size), dim_(embedding_size) {}
  std::string op() const override { return "tied_dense"; }
  Shape output_shape(const std::vector<Shape>& inputs) const override;
  Tensor forward(const std::vector<Tensor>& inputs, std::span<const Tensor> params, const ForwardContext&) const override;
  int shared_params_input() const override { return 1; }

 private:
  int64_t vocab_, dim_;
};
LayerStep tied_dense(const Model& embedding_model);

// ---- attention ----
struct MultiHeadAttentionOptions {
  bool causal = false;  // query t attends to keys ≤ t only (a decoder)
  bool use_bias = true;
  Initializer kernel_initializer = initializers::glorot_uniform();
  Initializer bias_initializer = initializers::zeros();
};
// Multi-head self-attention (Vaswani et al. 2017) over x {batch, time, d_model}, as
// torch.nn.MultiheadAttention(d_model, num_heads, batch_first=True) with query = key = value = x:
//   [q k v] = x · qkv_kernel + qkv_bias     (qkv_kernel {d_model, 3·d_model}: torch's in_proj_weightᵀ)
//   each split into num_heads heads of d_model/num_heads, attended with
//   scaled_dot_product_attention (causal, key_padding_mask), heads joined again,
//   out = · out_kernel + out_bias           (out_kernel {d_model, d_model}: out_proj.weightᵀ)
// Params qkv_kernel, qkv_bias {3·d_model}, out_kernel, out_bias {d_model} (biases with use_bias).
// An optional second input {batch, time} is the key padding mask (nonzero = padding, ignored as
// a key). num_heads must divide d_model.
class MultiHeadAttentionLayer : public Layer {
 public:
  MultiHeadAttentionLayer(int64_t num_heads, MultiHeadAttentionOptions options);
  std::string op() const override { return "multi_head_attention"; }
  Shape output_shape(const std::vector<Shape>& inputs) const override;
  std::vector<ParamSpec> params(const std::vector<Shape>& inputs) const override;
  Tensor forward(const std::vector<Tensor>& inputs, std::span<const Tensor> params, const ForwardContext&) const override;

 private:
  std::string describe() const;
  int64_t heads_;
  MultiHeadAttentionOptions options_;
};
LayerStep multi_head_attention(int64_t num_heads, MultiHeadAttentionOptions options = {});
// With a key padding mask model ({batch, time}, usually a second input of the model).
Model multi_head_attention(const Model& x, const Model& key_padding_mask, int64_t num_heads,
                           MultiHeadAttentionOptions options = {});

enum class BlockNorm { layer_norm, rms_norm };
struct TransformerBlockOptions {
  int64_t num_heads = 4;
  int64_t mlp_size = 0;  // the MLP's hidden width; 0 means 4·d_model (GPT-2)
  bool causal = true;
  BlockNorm norm = BlockNorm::layer_norm;
  double epsilon = 1e-5;
  Activation activation = Activation::gelu;
};
// A pre-norm transformer block (GPT-2; Radford et al. 2019), from public layers only:
//   h   = x + multi_head_attention(norm₁(x))
//   out = h + dense(d_model)(activation(dense(mlp_size)(norm₂(h))))
// x {batch, time, d_model} -> the same shape. The norms start at gamma 1, beta 0 (PyTorch's, not
// the seed's glorot_uniform gamma). d_model is read from x's planned shape.
LayerStep transformer_block(TransformerBlockOptions options = {});
Model transformer_block(const Model& x, TransformerBlockOptions options = {});

}  // namespace axon
