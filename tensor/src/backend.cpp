// Backend dispatch: the device decides which kernels run.
#include "axon/backend.h"

#include "cuda/cuda_hooks.h"

namespace axon {

Backend& cpu_backend();  // cpu/cpu_backend.cpp

Backend& backend(Device device) { return device.is_cpu() ? cpu_backend() : cuda_detail::backend(device.index); }

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
