// Recurrent layers: lstm, gru, conv_lstm, bidirectional and mask (the seed's Axon.lstm, Axon.gru,
// Axon.conv_lstm, Axon.bidirectional, Axon.mask; shared/notes/axon-inventory.md §3), and their
// functional level (the seed's Axon.Layers.lstm_cell, gru_cell, conv_lstm_cell, static_unroll,
// dynamic_unroll).
//
//   Model x = input({-1, 20, 16});                         // {batch, time, features}, batch first
//   RecurrentOutput out = lstm(x, 32);                      // out.sequence {batch, 20, 32}
//   Model logits = out.sequence | dense(10);                // out.state = {c, h}, each {batch, 32}
//   Model y = input({-1, 20}) | embedding(...) | lstm(128) | dense(vocab);   // the pipe form
//
// Parameters (the seed's layout, one tensor per group, the gates side by side in the seed's order):
//   lstm: input_kernel {F, 4U} = [wii wif wig wio], hidden_kernel {U, 4U} = [whi whf whg who],
//         bias {4U} = [bi bf bg bo].
//         PyTorch nn.LSTM: input_kernel = weight_ih_l0ᵀ, hidden_kernel = weight_hh_l0ᵀ,
//         bias = bias_ih_l0 + bias_hh_l0 (same gate order i, f, g, o).
//   gru:  input_kernel {F, 3U} = [wir wiz win], hidden_kernel {U, 3U} = [whr whz whn],
//         bias {4U} = [br bz bin bhn].
//         PyTorch nn.GRU: input_kernel = weight_ih_l0ᵀ, hidden_kernel = weight_hh_l0ᵀ,
//         br = b_ir + b_hr, bz = b_iz + b_hz, bin = b_in, bhn = b_hn (same order r, z, n).
//   conv_lstm: input_kernel {k..., C, 4U}, hidden_kernel {k..., U, 4U}, bias {4U}, gates in the
//         seed's order [i g f o], forget gate sigmoid(f + 1) (Shi et al. 2015 with the seed's bias).
// Each gate block of a kernel is drawn separately by kernel_initializer (glorot_uniform's fans are
// those of one gate, {F, U}, as in the seed's separate wii, wif, ... parameters).
//
// Formulas (σ = gate, φ = activation; x·W a dense product; seed and PyTorch agree):
//   lstm: i = σ(x·wii + h·whi + bi), f = σ(x·wif + h·whf + bf), g = φ(x·wig + h·whg + bg),
//         o = σ(x·wio + h·who + bo); c' = f⊙c + i⊙g; h' = o⊙φ(c'). Hochreiter & Schmidhuber 1997.
//   gru:  r = σ(x·wir + h·whr + br), z = σ(x·wiz + h·whz + bz), n = φ(x·win + bin + r⊙(h·whn + bhn)),
//         h' = (1 − z)⊙n + z⊙h. Cho et al. 2014.
//   conv_lstm: the lstm with the dense products replaced by convolutions (channels first), Shi et
//         al. 2015, "Convolutional LSTM Network", arXiv:1506.04214.
// Sequence mask (the seed's semantics): where mask[b, t] is 1 (the token was eos, see mask()),
// step t leaves sample b's state unchanged (c' = c, h' = h) and outputs the carried h.
//
// Output: the layers are multi-output; the layer computes {sequence, state...} in one tensor and
// RecurrentOutput holds a Model for each part (only the parts used enter a model). summary()
// prints the layer's every output shape. Shapes: sequence {B, T, U}; lstm state {c, h}, gru {h},
// each {B, U}; conv_lstm (input {B, T, C, spatial...}, channels first as the seed) sequence
// {B, T, U, spatial...}, state {c, h} each {B, 1, U, spatial...} (the seed's rank-up state).
//
// Errors (std::invalid_argument): units ≤ 0, unknown or empty options when the builder is called;
// a wrong input rank, an unknown feature size, a state or mask shape that does not fit, when the
// model is planned (init, summary) — each naming the layer, its options and the shapes.
//
// Speed: on the CPU, lstm and gru with unroll dynamic and the default gate/activation (f32 or f64)
// run one fused operator over the whole sequence: one GEMM for every timestep's input projection,
// per step one GEMM with the hidden kernel and a fused element-wise gate kernel, and a backward
// pass of its own (three more sequence-wide GEMMs for the kernel and input gradients). Everything
// else (unroll static, other activations, conv_lstm, bf16, CUDA devices) runs the cell as
// composed, differentiable ops step by step (on CUDA those ops' own kernels; no RNN-specific GPU
// kernel is written, and nothing here was run on a GPU).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "axon/conv_ops.h"
#include "axon/layer.h"
#include "axon/model.h"

namespace axon {

enum class Unroll { dynamic, static_ };  // the seed's unroll: :dynamic (default) | :static

// The common options, with the seed's defaults except recurrent_initializer (see below).
struct RecurrentOptions {
  Activation activation = Activation::tanh;  // φ: candidate and cell output (element-wise ones only)
  Activation gate = Activation::sigmoid;     // σ: the gates (element-wise ones only)
  Unroll unroll = Unroll::dynamic;
  bool use_bias = true;
  Initializer kernel_initializer = initializers::glorot_uniform();
  Initializer bias_initializer = initializers::zeros();
  // The initial state when none is given as an input, drawn per forward pass with a Generator of
  // `seed` (the same each pass, not trainable). Default zeros (PyTorch's); the seed draws
  // glorot_uniform: pass initializers::glorot_uniform() for its behaviour.
  Initializer recurrent_initializer = initializers::zeros();
  uint64_t seed = 0;
  // The sequence mask {B, T} (1 = carry the state through this step), e.g. mask(ids, 0); none when
  // undefined (the seed's default Axon.constant(0)).
  Model mask = {};
};

// conv_lstm's options: the common ones (activation and gate are fixed by the seed's cell: tanh and
// sigmoid) and the convolution's (the seed's defaults: padding same, kernel_size 1, strides 1).
struct ConvLstmOptions {
  std::vector<int64_t> kernel_size = {1};
  std::vector<int64_t> strides = {1};
  Padding padding = Padding::same();
  Unroll unroll = Unroll::dynamic;
  bool use_bias = true;
  Initializer kernel_initializer = initializers::glorot_uniform();
  Initializer bias_initializer = initializers::zeros();
  Initializer recurrent_initializer = initializers::zeros();
  uint64_t seed = 0;
  Model mask = {};
};

struct RecurrentOutput {
  Model sequence;            // {B, T, U} (conv_lstm {B, T, U, spatial...})
  std::vector<Model> state;  // lstm and conv_lstm {c, h}; gru {h}
};

// lstm(x, units): x {B, T, F}; state from recurrent_initializer. lstm(x, {c, h}, units): the
// initial state given as models of shape {B, U}.
RecurrentOutput lstm(const Model& x, int64_t units, RecurrentOptions options = {});
RecurrentOutput lstm(const Model& x, const std::vector<Model>& state, int64_t units, RecurrentOptions options = {});
// gru(x, units) / gru(x, {h}, units).
RecurrentOutput gru(const Model& x, int64_t units, RecurrentOptions options = {});
RecurrentOutput gru(const Model& x, const std::vector<Model>& state, int64_t units, RecurrentOptions options = {});
// conv_lstm(x, units): x {B, T, C, spatial...} (1 to 3 spatial dims); the hidden convolution must
// keep the state's spatial shape (strides 1 and padding same, the seed's defaults, do).
RecurrentOutput conv_lstm(const Model& x, int64_t units, ConvLstmOptions options = {});
RecurrentOutput conv_lstm(const Model& x, const std::vector<Model>& state, int64_t units, ConvLstmOptions options = {});
// Pipe forms returning the output sequence: input({-1, T, F}) | lstm(64) | dense(10).
LayerStep lstm(int64_t units, RecurrentOptions options = {});
LayerStep gru(int64_t units, RecurrentOptions options = {});

// The sequence mask of the seed: 1.0 where the id equals eos_token, else 0.0 (f32), any shape
// ({B, T} ids for a recurrent layer's mask option).
Model mask(const Model& x, int64_t eos_token);

// The seed's bidirectional: forward_fun on x and on x reversed along `axis`, the second result
// reversed back, the two merged by merge_fun (concatenate(a, b) for PyTorch's bidirectional
// output, add, ...). forward_fun is called twice, so each direction has its own parameters
// (PyTorch's nn.LSTM(bidirectional=True)); the seed wraps it in Axon.block and shares them.
//   bidirectional(x, [](const Model& m) { return lstm(m, 32).sequence; },
//                 [](const Model& a, const Model& b) { return concatenate(a, b); });
Model bidirectional(const Model& x, const std::function<Model(const Model&)>& forward_fun,
                    const std::function<Model(const Model&, const Model&)>& merge_fun, int64_t axis = 1);
// x reversed along axis (not the batch axis) as a layer.
Model reverse(const Model& x, int64_t axis = 1);

// ---- functional level (the seed's Axon.Layers) ----
// Tensors of one floating dtype and device; mask (optional: an undefined tensor) {B} or {B, 1}
// of 0/1 values in that dtype. Shapes as above; kernels and bias in the layout above.

// One lstm step: returns {c', h'} (the output is h').
std::pair<Tensor, Tensor> lstm_cell(const Tensor& x, const Tensor& c, const Tensor& h, const Tensor& mask,
                                    const Tensor& input_kernel, const Tensor& hidden_kernel, const Tensor& bias,
                                    Activation gate = Activation::sigmoid, Activation activation = Activation::tanh);
// One gru step: returns h' (also the output).
Tensor gru_cell(const Tensor& x, const Tensor& h, const Tensor& mask, const Tensor& input_kernel,
                const Tensor& hidden_kernel, const Tensor& bias, Activation gate = Activation::sigmoid,
                Activation activation = Activation::tanh);
// One conv_lstm step: x {B, C, spatial...}, c and h {B, U, spatial...}; returns {c', h'}.
std::pair<Tensor, Tensor> conv_lstm_cell(const Tensor& x, const Tensor& c, const Tensor& h, const Tensor& mask,
                                         const Tensor& input_kernel, const Tensor& hidden_kernel, const Tensor& bias,
                                         const ConvOptions& conv_options);

// A cell for the unrolls: (x_t, carry, mask_t) → new carry; the step's output is the carry's last
// element (h).
using CellFn = std::function<std::vector<Tensor>(const Tensor& x_t, const std::vector<Tensor>& carry, const Tensor& mask_t)>;
struct UnrollResult {
  Tensor sequence;           // {B, T, ...}: each step's output stacked along axis 1
  std::vector<Tensor> state;  // the final carry
};
// Both run the cell once per step of x's axis 1 ({B, T, ...}); mask {B, T} or undefined. In eager
// C++ they are the same loop (the seed's difference is how Nx compiles them); the fused operator
// is what lstm()/gru() with unroll dynamic add.
UnrollResult static_unroll(const CellFn& cell, const Tensor& x, const std::vector<Tensor>& carry, const Tensor& mask);
UnrollResult dynamic_unroll(const CellFn& cell, const Tensor& x, const std::vector<Tensor>& carry, const Tensor& mask);

// Whole layers as functions (the seed's Axon.Layers.lstm/gru/conv_lstm). state: lstm {c, h}, gru
// {h}, conv_lstm {c, h} of shape {B, 1, U, spatial...}. unroll dynamic on the CPU with the default
// gate and activation uses the fused operator.
UnrollResult lstm(const Tensor& x, const std::vector<Tensor>& state, const Tensor& mask, const Tensor& input_kernel,
                  const Tensor& hidden_kernel, const Tensor& bias, Unroll unroll = Unroll::dynamic,
                  Activation gate = Activation::sigmoid, Activation activation = Activation::tanh);
UnrollResult gru(const Tensor& x, const std::vector<Tensor>& state, const Tensor& mask, const Tensor& input_kernel,
                 const Tensor& hidden_kernel, const Tensor& bias, Unroll unroll = Unroll::dynamic,
                 Activation gate = Activation::sigmoid, Activation activation = Activation::tanh);
UnrollResult conv_lstm(const Tensor& x, const std::vector<Tensor>& state, const Tensor& mask,
                       const Tensor& input_kernel, const Tensor& hidden_kernel, const Tensor& bias,
                       const ConvOptions& conv_options, Unroll unroll = Unroll::dynamic);

// x reversed along axis, differentiable.
Tensor reverse(const Tensor& x, int64_t axis);

}  // namespace axon
