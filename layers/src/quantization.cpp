#include "axon/quantization.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <unordered_map>

#include "axon/autograd.h"

namespace axon {

QuantizedKernel QuantizedKernel::from_tensor(const Tensor& kernel) {
  if (!kernel.defined() || kernel.dim() != 2)
    throw std::invalid_argument(fmt::format("quantize: a dense kernel {{in, out}} is 2-d, got {}",
                                            kernel.defined() ? shape_str(kernel.shape()) : std::string("(none)")));
  if (kernel.dtype() != DType::f32 && kernel.dtype() != DType::f64)
    throw std::invalid_argument(fmt::format("quantize: the kernel must be f32 or f64, got {}", dtype_name(kernel.dtype())));
  QuantizedKernel k;
  k.in = kernel.shape()[0];
  k.out = kernel.shape()[1];
  const std::vector<double> w = kernel.to_double_vector();
  k.scale.assign(static_cast<size_t>(k.out), 1.0f);
  k.q.resize(w.size());
  const size_t in = static_cast<size_t>(k.in), out = static_cast<size_t>(k.out);
  for (size_t o = 0; o < out; ++o) {
    double amax = 0.0;
    for (size_t i = 0; i < in; ++i) {
      const double v = w[i * out + o];
      if (!std::isfinite(v))
        throw std::invalid_argument(fmt::format("quantize: the kernel {} holds a non-finite weight {} at [{}, {}]",
                                                shape_str(kernel.shape()), v, i, o));
      amax = std::max(amax, std::abs(v));
    }
    // Symmetric: 0 maps to 0 and the largest magnitude to ±127 (the seed's QTensor range is
    // [-128, 127]; -128 is reached only by rounding, never for symmetric values).
    const float scale = amax > 0.0 ? static_cast<float>(amax / 127.0) : 1.0f;
    k.scale[o] = scale;
    for (size_t i = 0; i < in; ++i)
      k.q[i * out + o] = static_cast<int8_t>(std::clamp(std::nearbyint(w[i * out + o] / scale), -128.0, 127.0));
  }
  return k;
}

Tensor QuantizedKernel::dequantize() const {
  std::vector<float> w(q.size());
  for (size_t i = 0; i < q.size(); ++i) w[i] = static_cast<float>(q[i]) * scale[i % static_cast<size_t>(out)];
  return Tensor::from_vector({in, out}, w);
}

Tensor quantized_linear(const Tensor& x, const QuantizedKernel& kernel, const Tensor& bias) {
  const char* op = "weight_only_quantized_dense";
  if (!x.device().is_cpu())
    throw std::invalid_argument(fmt::format("{}: runs on the CPU; the input is on {}", op, x.device().str()));
  if (x.dtype() != DType::f32)
    throw std::invalid_argument(fmt::format("{}: the input must be f32, got {}", op, dtype_name(x.dtype())));
  if (x.dim() != 2 || x.shape()[1] != kernel.in)
    throw std::invalid_argument(fmt::format("{}: input {} does not fit the kernel {{{}, {}}}", op, shape_str(x.shape()),
                                            kernel.in, kernel.out));
  if (bias.defined() && (bias.dtype() != DType::f32 || bias.shape() != Shape{kernel.out} || !bias.device().is_cpu()))
    throw std::invalid_argument(fmt::format("{}: bias must be f32 {{{}}} on the CPU, got {} {} on {}", op, kernel.out,
                                            dtype_name(bias.dtype()), shape_str(bias.shape()), bias.device().str()));
  if (x.requires_grad() && grad_enabled())
    throw std::invalid_argument(fmt::format("{}: inference only (its int8 weights have no gradient); run it under "
                                            "predict() or a NoGradGuard", op));
  const int64_t batch = x.shape()[0], in = kernel.in, out = kernel.out;
  Tensor y = Tensor::zeros({batch, out});
  const Tensor& xc = x;  // tensors are contiguous
  const float* xp = xc.data();
  float* yp = y.data();
  const int8_t* qp = kernel.q.data();
  // Blocks of 64 rows of x share each pass over a row of q (int8: 4x less traffic than f32 for
  // the kernel). The inner loop over the output channels converts int8 to f32 and vectorizes.
  constexpr int64_t kRows = 64;
  for (int64_t b0 = 0; b0 < batch; b0 += kRows) {
    const int64_t b1 = std::min(batch, b0 + kRows);
    for (int64_t i = 0; i < in; ++i) {
      const int8_t* qrow = qp + i * out;
      for (int64_t b = b0; b < b1; ++b) {
        const float xv = xp[b * in + i];
        if (xv == 0.0f) continue;  // relu outputs are often zero
        float* yrow = yp + b * out;
        for (int64_t o = 0; o < out; ++o) yrow[o] += xv * static_cast<float>(qrow[o]);
      }
    }
  }
  const float* sp = kernel.scale.data();
  const float* bp = bias.defined() ? bias.data() : nullptr;
  for (int64_t b = 0; b < batch; ++b) {
    float* yrow = yp + b * out;
    for (int64_t o = 0; o < out; ++o) yrow[o] = yrow[o] * sp[o] + (bp ? bp[o] : 0.0f);
  }
  return y;
}

WeightOnlyQuantizedDenseLayer::WeightOnlyQuantizedDenseLayer(std::shared_ptr<const QuantizedKernel> kernel, bool use_bias)
    : kernel_(std::move(kernel)), use_bias_(use_bias) {
  if (!kernel_) throw std::invalid_argument("weight_only_quantized_dense: no kernel");
}

Shape WeightOnlyQuantizedDenseLayer::output_shape(const std::vector<Shape>& inputs) const {
  if (inputs.size() != 1)
    throw std::invalid_argument(fmt::format("weight_only_quantized_dense takes 1 input, got {}", inputs.size()));
  const Shape& in = inputs[0];
  // Rank >= 2, on the last axis, as dense.
  if (in.size() < 2 || in.back() != kernel_->in)
    throw std::invalid_argument(fmt::format("weight_only_quantized_dense expects an input {{batch, ..., {}}}, got {}",
                                            kernel_->in, shape_str(in)));
  Shape out = in;
  out.back() = kernel_->out;
  return out;
}

std::vector<ParamSpec> WeightOnlyQuantizedDenseLayer::params(const std::vector<Shape>&) const {
  if (!use_bias_) return {};
  return {{"bias", {kernel_->out}, initializers::zeros()}};
}

Tensor WeightOnlyQuantizedDenseLayer::forward(const std::vector<Tensor>& inputs, std::span<const Tensor> params,
                                              const ForwardContext&) const {
  const Tensor& x = inputs.at(0);
  if (x.dim() == 2) return quantized_linear(x, *kernel_, use_bias_ ? params[0] : Tensor());
  // {batch, ..., in}: the rows of every position at once, then the leading axes back.
  Shape out = x.shape();
  out.back() = kernel_->out;
  return quantized_linear(x.reshape({-1, kernel_->in}), *kernel_, use_bias_ ? params[0] : Tensor()).reshape(out);
}

QuantizedModel quantize(const Model& model, const Parameters& params) {
  const ModelPlan p = plan(model);
  const Parameters host = params.device().is_cpu() && params.dtype() == DType::f32 ? params : params.to(Device::cpu(), DType::f32);
  QuantizedModel result;
  std::vector<std::shared_ptr<ModelNode>> nodes(p.layers.size());
  for (size_t i = 0; i < p.layers.size(); ++i) {
    const PlannedLayer& layer = p.layers[i];
    auto node = std::make_shared<ModelNode>();
    node->layer = layer.node->layer;
    if (const auto* dense = dynamic_cast<const DenseLayer*>(layer.node->layer.get())) {
      const Tensor& kernel = host[layer.name + ".kernel"];  // throws naming a missing one
      auto q = std::make_shared<const QuantizedKernel>(QuantizedKernel::from_tensor(kernel));
      result.f32_kernel_bytes += static_cast<size_t>(kernel.numel()) * 4;
      result.quantized_kernel_bytes += q->bytes();
      node->layer = std::make_shared<WeightOnlyQuantizedDenseLayer>(std::move(q), dense->use_bias());
    }
    for (size_t j : layer.inputs) node->inputs.push_back(nodes[j]);
    nodes[i] = std::move(node);
  }
  result.model = Model(nodes.back());
  // The same parameters minus the dense kernels, in the same order; the names differ only by op.
  const ModelPlan qp = plan(result.model);
  std::vector<std::pair<std::string, Shape>> layout, state_layout;
  for (const PlannedLayer& l : qp.layers) {
    for (const ParamSpec& s : l.params) layout.emplace_back(l.name + "." + s.name, s.shape);
    for (const ParamSpec& s : l.state) state_layout.emplace_back(l.name + "." + s.name, s.shape);
  }
  result.params = Parameters(layout, Device::cpu(), DType::f32, state_layout);
  size_t k = 0;
  for (size_t i = 0; i < p.layers.size(); ++i) {
    const bool dense = dynamic_cast<const DenseLayer*>(p.layers[i].node->layer.get()) != nullptr;
    for (const ParamSpec& s : p.layers[i].params) {
      if (dense && s.name == "kernel") continue;
      result.params.at(k++).detach().copy_from(host[p.layers[i].name + "." + s.name]);
    }
  }
  if (host.state_count() > 0) result.params.flat_state().copy_from(host.flat_state());
  return result;
}

}  // namespace axon
