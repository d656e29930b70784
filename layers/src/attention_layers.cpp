// Sequence layers (axon/attention_layers.h).
#include "axon/attention_layers.h"

#include <fmt/format.h>

#include <stdexcept>

#include "axon/ops.h"
#include "axon/shape_ops.h"

namespace axon {

// ---- embedding ----

EmbeddingLayer::EmbeddingLayer(int64_t vocab_size, int64_t embedding_size, EmbeddingOptions options)
    : vocab_(vocab_size), dim_(embedding_size), options_(std::move(options)) {
  if (vocab_size <= 0 || embedding_size <= 0)
    throw std::invalid_argument(fmt::format("embedding (vocab_size {}, embedding_size {}): both must be positive",
                                            vocab_size, embedding_size));
  if (!options_.kernel_initializer)
    throw std::invalid_argument(fmt::format("embedding ({}, {}): kernel_initializer is empty", vocab_size, embedding_size));
}

Shape EmbeddingLayer::output_shape(const std::vector<Shape>& inputs) const {
  if (inputs.size() != 1) throw std::invalid_argument(fmt::format("embedding takes 1 input, got {}", inputs.size()));
  Shape out = inputs[0];
  out.push_back(dim_);
  return out;
}

std::vector<ParamSpec> EmbeddingLayer::params(const std::vector<Shape>&) const {
  return {{"kernel", {vocab_, dim_}, options_.kernel_initializer}};
}

Tensor EmbeddingLayer::forward(const std::vector<Tensor>& inputs, std::span<const Tensor> params,
                               const ForwardContext&) const {
  return axon::embedding(inputs.at(0), params[0]);
}

LayerStep embedding(int64_t vocab_size, int64_t embedding_size, EmbeddingOptions options) {
  auto layer = std::make_shared<EmbeddingLayer>(vocab_size, embedding_size, std::move(options));
  return {[layer](const Model& x) { return Model::apply(layer, {x}); }};
}

// ---- weight tying ----

Shape TiedDenseLayer::output_shape(const std::vector<Shape>& inputs) const {
  if (inputs.size() != 2)
    throw std::invalid_argument(fmt::format("tied_dense takes 2 inputs (x, the embedding), got {}", inputs.size()));
  const Shape& in = inputs[0];
  if (in.size() < 2 || in.back() != dim_)
    throw std::invalid_argument(fmt::format("tied_dense ({} x {} embedding kernel) expects an input {{batch, ..., {}}}, "
                                            "got {}",
                                            vocab_, dim_, dim_, shape_str(in)));
  Shape out = in;
  out.back() = vocab_;
  return out;
}

Tensor TiedDenseLayer::forward(const std::vector<Tensor>& inputs, std::span<const Tensor> params,
                               const ForwardContext&) const {
  const Tensor& x = inputs.at(0);
  const Tensor& kernel = params[0];  // the embedding's {vocab, dim}
  Shape out = x.shape();
  out.back() = vocab_;
  return matmul(x.reshape({-1, dim_}), transpose(kernel)).reshape(out);
}

LayerStep tied_dense(const Model& embedding_model) {
  if (!embedding_model.defined()) throw std::invalid_argument("tied_dense: the embedding model is empty");
  auto* emb = dynamic_cast<const EmbeddingLayer*>(embedding_model.output()->layer.get());
  if (!emb)
    throw std::invalid_argument(fmt::format("tied_dense: the model's output layer is {}, not an embedding",
                                            embedding_model.output()->layer->op()));
  auto layer = std::make_shared<TiedDenseLayer>(emb->vocab_size(), emb->embedding_size());
  return {[layer, embedding_model](const Model& x) { return Model::apply(layer, {x, embedding_model}); }};
}

// ---- attention ----

MultiHeadAttentionLayer::MultiHeadAttentionLayer(int64_t num_heads, MultiHeadAttentionOptions options)
    : heads_(num_heads), options_(std::move(options)) {
  if (num_heads < 1) throw std::invalid_argument(fmt::format("{}: num_heads must be positive", describe()));
  if (!options_.kernel_initializer || (options_.use_bias && !options_.bias_initializer))
    throw std::invalid_argument(fmt::format("{}: an initializer is empty", describe()));
}

std::string MultiHeadAttentionLayer::describe() const {
  return fmt::format("multi_head_attention (num_heads {}{})", heads_, options_.causal ? ", causal" : "");
}

Shape MultiHeadAttentionLayer::output_shape(const std::vector<Shape>& inputs) const {
  if (inputs.empty() || inputs.size() > 2)
    throw std::invalid_argument(
        fmt::format("{} takes 1 input (x) or 2 (x, key_padding_mask), got {}", describe(), inputs.size()));
  const Shape& x = inputs[0];
  if (x.size() != 3 || x[2] <= 0)
    throw std::invalid_argument(fmt::format("{} expects x {{batch, time, d_model}}, got {}", describe(), shape_str(x)));
  if (x[2] % heads_ != 0)
    throw std::invalid_argument(fmt::format("{}: d_model {} of input {} is not divisible by num_heads {}", describe(),
                                            x[2], shape_str(x), heads_));
  if (inputs.size() == 2) {
    const Shape& m = inputs[1];
    const bool batch_ok = m.size() == 2 && (m[0] == x[0] || m[0] == -1 || x[0] == -1);
    if (!batch_ok || m[1] != x[1])
      throw std::invalid_argument(fmt::format("{}: key_padding_mask {} does not match {{batch, time}} of x {}", describe(),
                                              shape_str(m), shape_str(x)));
  }
  return x;
}

std::vector<ParamSpec> MultiHeadAttentionLayer::params(const std::vector<Shape>& inputs) const {
  const int64_t e = inputs.at(0).at(2);
  std::vector<ParamSpec> specs{{"qkv_kernel", {e, 3 * e}, options_.kernel_initializer}};
  if (options_.use_bias) specs.push_back({"qkv_bias", {3 * e}, options_.bias_initializer});
  specs.push_back({"out_kernel", {e, e}, options_.kernel_initializer});
  if (options_.use_bias) specs.push_back({"out_bias", {e}, options_.bias_initializer});
  return specs;
}

Tensor MultiHeadAttentionLayer::forward(const std::vector<Tensor>& inputs, std::span<const Tensor> params,
                                        const ForwardContext&) const {
  const Tensor& x = inputs.at(0);
  const int64_t b = x.size(0), t = x.size(1), e = x.size(2), hd = e / heads_;
  const bool bias = options_.use_bias;
  const Tensor& qkv_kernel = params[0];
  const Tensor qkv_bias = bias ? params[1] : Tensor();
  const Tensor& out_kernel = params[bias ? 2 : 1];
  const Tensor out_bias = bias ? params[3] : Tensor();
  // One GEMM for q, k and v, then {batch, time, 3, heads, hd} -> {3, batch, heads, time, hd}.
  Tensor qkv = linear(x.reshape({b * t, e}), qkv_kernel, qkv_bias).reshape({b, t, 3, heads_, hd});
  qkv = permute(qkv, {2, 0, 3, 1, 4});
  std::vector<Tensor> parts = split(qkv, {1, 1, 1}, 0);
  AttentionOptions attn;
  attn.causal = options_.causal;
  if (inputs.size() == 2) attn.key_padding_mask = inputs[1];
  Tensor y = scaled_dot_product_attention(parts[0].reshape({b, heads_, t, hd}), parts[1].reshape({b, heads_, t, hd}),
                                          parts[2].reshape({b, heads_, t, hd}), attn);
  y = permute(y, {0, 2, 1, 3}).reshape({b * t, e});  // heads joined: {batch, time, heads·hd}
  return linear(y, out_kernel, out_bias).reshape({b, t, e});
}

LayerStep multi_head_attention(int64_t num_heads, MultiHeadAttentionOptions options) {
  auto layer = std::make_shared<MultiHeadAttentionLayer>(num_heads, std::move(options));
  return {[layer](const Model& x) { return Model::apply(layer, {x}); }};
}

Model multi_head_attention(const Model& x, const Model& key_padding_mask, int64_t num_heads,
                           MultiHeadAttentionOptions options) {
  auto layer = std::make_shared<MultiHeadAttentionLayer>(num_heads, std::move(options));
  return Model::apply(layer, {x, key_padding_mask});
}

// ---- transformer block ----

Model transformer_block(const Model& x, TransformerBlockOptions o) {
  if (o.num_heads < 1) throw std::invalid_argument(fmt::format("transformer_block: num_heads {} must be positive", o.num_heads));
  if (o.mlp_size < 0) throw std::invalid_argument(fmt::format("transformer_block: mlp_size {} must be ≥ 0", o.mlp_size));
  const Shape shape = plan(x).layers.back().output_shape;
  if (shape.size() != 3 || shape[2] <= 0)
    throw std::invalid_argument(
        fmt::format("transformer_block expects x {{batch, time, d_model}}, got {}", shape_str(shape)));
  const int64_t d_model = shape[2];
  const int64_t hidden = o.mlp_size > 0 ? o.mlp_size : 4 * d_model;
  auto norm = [&]() -> LayerStep {
    if (o.norm == BlockNorm::rms_norm) return rms_norm({.epsilon = o.epsilon, .gamma_initializer = initializers::ones()});
    return layer_norm({.epsilon = o.epsilon, .gamma_initializer = initializers::ones()});
  };
  Model h = add(x, x | norm() | multi_head_attention(o.num_heads, {.causal = o.causal}));
  return add(h, h | norm() | dense(hidden, o.activation) | dense(d_model));
}

LayerStep transformer_block(TransformerBlockOptions options) {
  return {[options](const Model& x) { return transformer_block(x, options); }};
}

}  // namespace axon
