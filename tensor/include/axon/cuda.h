// CUDA devices as Axon sees them. Every function is safe to call on a machine without a GPU, a
// CUDA driver, or a CUDA build: device_count() reports 0 and the others throw std::runtime_error
// naming the device.
//
// Errors: every CUDA and cuBLAS call is checked right after it returns, and its error is cleared
// there, so an error is reported by the call that caused it and never by a later one. Errors that
// leave the CUDA context unusable ("sticky" errors such as an illegal address in a kernel) end the
// process with a message naming the call and the device: nothing can run on that GPU afterwards,
// and under MPI a non-zero exit stops the whole job.
#pragma once

#include <string>

namespace axon::cuda {

// Number of usable CUDA devices; 0 when there is no driver, no GPU, or no CUDA in this build.
// Never throws.
int device_count();
// Whether this build has CUDA (the devices may still be missing).
bool built_with_cuda();
// The device's name, e.g. "NVIDIA H200". Throws std::runtime_error naming the device and the CUDA
// error (no such device, no driver, built without CUDA).
std::string device_name(int device);
// Waits for every kernel queued on the device's compute stream.
void synchronize(int device);
// The device's compute stream (a cudaStream_t), on which every Axon kernel and copy for that
// device is queued; communication backends (NCCL) order their own stream after it with events.
void* compute_stream(int device);
// The GPU this rank should use: local_rank % device_count() (the launcher's local rank), or
// throws when there is no GPU.
int device_for_local_rank(int local_rank);

}  // namespace axon::cuda
