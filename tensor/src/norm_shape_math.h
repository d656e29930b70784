// Index arithmetic of the group-normalization and resize kernels, written once for the CPU loops
// (cpu/norm_shape_kernels.cpp) and the CUDA kernels (cuda/norm_shape_kernels.cu).
#pragma once

#include <cstdint>

#include "axon/backend.h"
#include "kernel_support.h"

namespace axon::kernels {

// Element t (< p.lane_size()) of lane (s, g): its flat index in x and its channel.
struct GroupElement {
  int64_t index, channel;
};
AXON_HOST_DEVICE inline GroupElement group_element(const GroupNormParams& p, int64_t s, int64_t g, int64_t t) {
  const int64_t per_position = p.group_size * p.inner;
  const int64_t pos = t / per_position, rem = t % per_position;
  const int64_t channel = g * p.group_size + rem / p.inner;
  return {((s * p.positions + pos) * p.channels() + channel) * p.inner + rem % p.inner, channel};
}

// The source of output coordinate o along one resized axis (ResizeParams): the two neighbours and
// the weight of the second (nearest: one neighbour, weight 0).
struct ResizeTap {
  int64_t i0, i1;
  double w1;
};
AXON_HOST_DEVICE inline ResizeTap resize_tap(int64_t o, int64_t in, int64_t out, bool bilinear) {
  const double scale = static_cast<double>(in) / static_cast<double>(out);
  if (!bilinear) {
    int64_t i = static_cast<int64_t>((static_cast<double>(o) + 0.5) * scale);  // ⌊·⌋ of a non-negative value
    if (i > in - 1) i = in - 1;
    return {i, i, 0.0};
  }
  double src = (static_cast<double>(o) + 0.5) * scale - 0.5;
  if (src < 0.0) src = 0.0;
  int64_t i0 = static_cast<int64_t>(src);
  if (i0 > in - 1) i0 = in - 1;
  const int64_t i1 = i0 + 1 < in ? i0 + 1 : i0;
  return {i0, i1, src - static_cast<double>(i0)};
}

}  // namespace axon::kernels
