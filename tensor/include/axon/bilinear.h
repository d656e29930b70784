// The bilinear transform of two inputs (the seed's Axon.Layers.bilinear; torch.nn.functional.bilinear).
#pragma once

#include "axon/tensor.h"

namespace axon {

// y[..., u] = Σ_ij x1[..., i] · kernel[u, i, j] · x2[..., j] + bias[u].
// x1 {..., in1} and x2 {..., in2} have the same leading dims (the batch and any others: {batch,
// in} in the seed's usual use), kernel {units, in1, in2} (the seed's and PyTorch's layout), bias
// {units} or undefined; output {..., units}. f32, f64 or bf16 on any device, one dtype and
// device for all. Computed as one GEMM (x1 · kernel viewed {in1, units·in2}) and a product with
// x2 summed over in2; differentiable through those ops. For inputs of rank > 2 this follows
// PyTorch (the leading dims are batch dims); the seed's Nx.dot form is meant for rank 2.
// Throws std::invalid_argument naming bilinear and the shapes at fault.
Tensor bilinear(const Tensor& x1, const Tensor& x2, const Tensor& kernel, const Tensor& bias);

// The output shape for inputs of these shapes (leading dims may be −1) and a kernel {units, in1,
// in2}; throws as bilinear does.
Shape bilinear_output_shape(const Shape& x1, const Shape& x2, const Shape& kernel);

}  // namespace axon
