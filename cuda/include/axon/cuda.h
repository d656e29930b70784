// axon::cuda: the small device layer. Every function is safe to call on a machine
// without a GPU or CUDA driver: device_count() reports 0 and the others throw.
#pragma once

#include <cstddef>
#include <string>

namespace axon::cuda {

// Number of usable CUDA devices; 0 when there is no driver or no GPU. Never throws.
int device_count();

// Name of device `index`, e.g. "NVIDIA H200".
// Throws std::runtime_error with the CUDA error text (bad index, no driver, ...).
std::string device_name(int index);

// Version of the NCCL library linked in, e.g. "2.27.3"; "" when built without NCCL.
std::string nccl_version();

// Multiplies host_data[0..n) by factor on the current GPU: copies the data over, runs a
// small kernel, copies it back. n == 0 is a no-op. Throws std::invalid_argument for a
// null host_data with n > 0, and std::runtime_error with the CUDA error text if any
// CUDA step fails; host_data is unchanged in that case.
void scale_on_device(float* host_data, std::size_t n, float factor);

}  // namespace axon::cuda
