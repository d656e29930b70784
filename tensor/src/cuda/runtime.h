// The CUDA runtime layer shared by the allocator and the kernels: error checks, per-device state
// (compute stream, cuBLAS handle), and the device guard.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <sstream>
#include <string>

namespace axon::cuda_detail {

// Messages in .cu files are built with this: nvcc's front end cannot compile fmt's compile-time
// format checks.
template <class... Args>
std::string cat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

// Throws std::runtime_error "CUDA <call> on cuda:<device> failed: <name>: <text>" after clearing
// the error; ends the process for sticky errors (see axon/cuda.h).
void check(cudaError_t err, const char* call, int device);
void check_cublas(cublasStatus_t status, const char* call, int device);
// Checks a kernel launch (cudaGetLastError) right after it.
void check_launch(const char* kernel, int device);

struct DeviceState {
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  void* cublas_workspace = nullptr;
};
// Created on first use (cudaSetDevice, a non-blocking stream, a cuBLAS handle bound to it).
DeviceState& state(int device);

// Makes `device` current for the calling thread while alive.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

}  // namespace axon::cuda_detail
