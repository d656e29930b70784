// Window index arithmetic shared by the CPU and CUDA convolution and pooling kernels
// (ConvGeometry in axon/backend.h). Header-only, compiled by nvcc too.
#pragma once

#include <cstdint>

#include "kernel_support.h"

namespace axon::kernels {

// The input coordinate that output position o, window tap j reads along dim d, or −1 for padding
// (including the holes input dilation makes).
AXON_HOST_DEVICE inline int64_t conv_input_at(const ConvGeometry& g, int d, int64_t o, int64_t j) {
  int64_t p = o * g.stride[d] - g.pad_lo[d] + j * g.kernel_dilation[d];
  if (p < 0 || p % g.input_dilation[d] != 0) return -1;
  p /= g.input_dilation[d];
  return p < g.in[d] ? p : -1;
}

// The output position whose window tap j reads input coordinate i along dim d, or −1 if none
// (the inverse of conv_input_at, for the gather-form backward kernels).
AXON_HOST_DEVICE inline int64_t conv_output_at(const ConvGeometry& g, int d, int64_t i, int64_t j) {
  const int64_t t = i * g.input_dilation[d] + g.pad_lo[d] - j * g.kernel_dilation[d];
  if (t < 0 || t % g.stride[d] != 0) return -1;
  const int64_t o = t / g.stride[d];
  return o < g.out[d] ? o : -1;
}

AXON_HOST_DEVICE inline int64_t conv_out_positions(const ConvGeometry& g) { return g.out[0] * g.out[1] * g.out[2]; }
AXON_HOST_DEVICE inline int64_t conv_in_positions(const ConvGeometry& g) { return g.in[0] * g.in[1] * g.in[2]; }
AXON_HOST_DEVICE inline int64_t conv_taps(const ConvGeometry& g) { return g.kernel[0] * g.kernel[1] * g.kernel[2]; }

}  // namespace axon::kernels
