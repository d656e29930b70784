// Backend dispatch: the device decides which kernels run.
#include "axon/backend.h"

#include <stdexcept>
#include <string>

#include "cuda/cuda_hooks.h"

namespace axon {

Backend& cpu_backend();  // cpu/cpu_backend.cpp

Backend& backend(Device device) { return device.is_cpu() ? cpu_backend() : cuda_detail::backend(device.index); }

// A backend without a library convolution answers has_conv with false, so these are never reached
// through conv (ops/conv.cpp); a direct call is a programming error.
namespace {
[[noreturn]] void no_conv(const Backend& b, const char* op) {
  throw std::logic_error(std::string(op) + ": the " + b.name() + " backend has no library convolution (has_conv is false)");
}
}  // namespace

void Backend::conv_forward(const Tensor&, const Tensor&, const Tensor*, const ConvGeometry&, Tensor&) {
  no_conv(*this, "conv_forward");
}
void Backend::conv_backward_data(const Tensor&, const Tensor&, const ConvGeometry&, Tensor&) {
  no_conv(*this, "conv_backward_data");
}
void Backend::conv_backward_weights(const Tensor&, const Tensor&, const ConvGeometry&, float, Tensor&, Tensor*, float) {
  no_conv(*this, "conv_backward_weights");
}

AxisSplit split_at(const Shape& shape, int64_t axis) {
  AxisSplit s;
  for (int64_t d = 0; d < static_cast<int64_t>(shape.size()); ++d) {
    if (d < axis) s.outer *= shape[d];
    else if (d == axis) s.n = shape[d];
    else s.inner *= shape[d];
  }
  return s;
}

}  // namespace axon
