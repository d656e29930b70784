#include "axon/cuda.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>

namespace axon::cuda {
namespace {

void check(cudaError_t err, const std::string& what) {
  if (err != cudaSuccess) {
    throw std::runtime_error("CUDA " + what + " failed: " + cudaGetErrorString(err));
  }
}

// Owns one device allocation, so an error part-way through never leaks GPU memory.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(std::size_t bytes) { check(cudaMalloc(&ptr_, bytes), "cudaMalloc"); }
  ~DeviceBuffer() { cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  float* get() const { return static_cast<float*>(ptr_); }

 private:
  void* ptr_ = nullptr;
};

// Grid-stride loop: correct for any n, whatever grid size the launch picks.
__global__ void scale_kernel(float* data, std::size_t n, float factor) {
  std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    data[i] *= factor;
  }
}

}  // namespace

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the error so later calls do not see it
    return 0;
  }
  return count;
}

std::string device_name(int index) {
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, index), "cudaGetDeviceProperties(device " + std::to_string(index) + ")");
  return prop.name;
}

#ifndef AXON_HAS_NCCL
std::string nccl_version() { return ""; }  // nccl_check.cpp defines it when NCCL is built in
#endif

void scale_on_device(float* host_data, std::size_t n, float factor) {
  if (n == 0) return;
  if (host_data == nullptr) throw std::invalid_argument("axon::cuda::scale_on_device: host_data is null");

  const std::size_t bytes = n * sizeof(float);
  DeviceBuffer device(bytes);
  check(cudaMemcpy(device.get(), host_data, bytes, cudaMemcpyHostToDevice), "cudaMemcpy to device");

  constexpr int kThreads = 256;
  const std::size_t wanted_blocks = (n + kThreads - 1) / kThreads;
  const int blocks = static_cast<int>(std::min<std::size_t>(wanted_blocks, 65535));
  scale_kernel<<<blocks, kThreads>>>(device.get(), n, factor);
  check(cudaGetLastError(), "scale kernel launch");

  // Wait for the kernel before copying back, so a kernel fault is reported as such and
  // host_data is left untouched.
  check(cudaDeviceSynchronize(), "scale kernel");
  check(cudaMemcpy(host_data, device.get(), bytes, cudaMemcpyDeviceToHost), "cudaMemcpy to host");
}

}  // namespace axon::cuda
