// int8 weight-only quantization of dense layers for inference (the seed's Axon.Quantization).
//
//   QuantizedModel q = quantize(model, params);
//   Tensor y = predict(q.model, q.params, x);   // dense layers now weight_only_quantized_dense
//
// Each dense kernel {in, out} becomes int8 values q and one f32 scale per output channel
// (symmetric, per channel, as the seed's QTensor.from_tensor: scale_o = max_i |W[i, o]| / 127,
// q[i, o] = clamp(round(W[i, o] / scale_o), -128, 127); a channel of zeros gets scale 1), so the
// kernel takes a quarter of its f32 memory plus 4 bytes per output channel. The layer computes
// y = (x · q) · diag(scale) + bias, converting the int8 weights to f32 inside the GEMM loop (no
// dequantized copy of the kernel is made). Activations and the bias stay f32. Inference only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "axon/model.h"

namespace axon {

// The quantized weights of one dense kernel {in, out}: q row-major like the kernel, scale per out.
struct QuantizedKernel {
  int64_t in = 0, out = 0;
  std::vector<int8_t> q;
  std::vector<float> scale;
  // Quantizes an f32 or f64 kernel {in, out} (any device: read on the host). Throws
  // std::invalid_argument naming the shape or dtype otherwise, or a non-finite weight.
  static QuantizedKernel from_tensor(const Tensor& kernel);
  Tensor dequantize() const;  // {in, out} f32 on the CPU: q · scale
  size_t bytes() const { return q.size() + scale.size() * sizeof(float); }
};

// y = x · dequantize(kernel) + bias for x f32 {batch, in} on the CPU, without making the
// dequantized kernel: int8 → f32 conversions in the inner loop of a blocked GEMM (blocks of 64
// rows of x, vectorized over the output channels), scale and bias applied once per output.
// bias: empty or f32 {out}. Throws std::invalid_argument naming the shapes, dtype or device.
Tensor quantized_linear(const Tensor& x, const QuantizedKernel& kernel, const Tensor& bias);

// The layer that replaces dense: holds its quantized kernel (a model value, like constant's
// tensor), and takes "bias" {units} as its parameter when the dense had one. op()
// "weight_only_quantized_dense"; its summary row counts the bias only.
class WeightOnlyQuantizedDenseLayer : public Layer {
 public:
  WeightOnlyQuantizedDenseLayer(std::shared_ptr<const QuantizedKernel> kernel, bool use_bias);
  std::string op() const override { return "weight_only_quantized_dense"; }
  Shape output_shape(const std::vector<Shape>& inputs) const override;
  std::vector<ParamSpec> params(const std::vector<Shape>& inputs) const override;
  Tensor forward(const std::vector<Tensor>& inputs, std::span<const Tensor> params, const ForwardContext& ctx) const override;
  const QuantizedKernel& kernel() const { return *kernel_; }

 private:
  std::shared_ptr<const QuantizedKernel> kernel_;
  bool use_bias_;
};

struct QuantizedModel {
  Model model;        // the same graph, each dense layer replaced by weight_only_quantized_dense
  Parameters params;  // every other parameter and all model state copied; f32 on the CPU
  size_t f32_kernel_bytes = 0;        // the dense kernels' size before (4 bytes a weight)
  size_t quantized_kernel_bytes = 0;  // and after (1 byte a weight + 4 per output channel)
};
// Quantizes every dense layer of `model` with the values in `params` (f32 or f64, any device:
// the result is on the CPU). Layer names keep their numbers: "dense_2" becomes
// "weight_only_quantized_dense_2". Throws std::out_of_range naming a parameter the model needs
// and params lack.
QuantizedModel quantize(const Model& model, const Parameters& params);

}  // namespace axon
