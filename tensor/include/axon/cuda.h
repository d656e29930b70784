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

#include <functional>
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

// A CUDA graph of work on one device's compute stream: captured once, then replayed with a single
// launch, so a training step costs one host call instead of one per kernel (CUDA Programming
// Guide, "CUDA Graphs"; PyTorch's torch.cuda.CUDAGraph works the same way).
//
// What the capture records is fixed: the kernels, their arguments, and so the addresses of every
// tensor they touch. Tensors allocated during the capture come from a private memory pool that
// nothing else uses while the graph lives; tensors from before the capture that the captured work
// uses (parameters, optimizer state, input buffers) must stay alive and in place, and are updated
// between replays by writing into them (Tensor::copy_from). Inputs that change per replay must
// live on the device: a scalar passed to a kernel is frozen at capture time.
class Graph {
 public:
  // Throws std::runtime_error when `device` does not exist or the build has no CUDA.
  explicit Graph(int device);
  ~Graph();
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  // Runs `work`, recording what it queues on the device's compute stream instead of executing it.
  // Throws std::runtime_error naming the device when the work waits for the device or copies
  // to or from host memory (not capturable: read results after replay()), when the graph is
  // already captured, or when CUDA cannot instantiate it; an exception thrown by `work` ends the
  // capture and is rethrown as it is.
  void capture(const std::function<void()>& work);
  // Queues the captured work once more on the compute stream (asynchronous, like any kernel).
  // Throws std::logic_error before capture().
  void replay();
  bool captured() const { return exec_ != nullptr; }
  int device() const { return device_; }

 private:
  int device_;
  void* graph_ = nullptr;  // cudaGraph_t
  void* exec_ = nullptr;   // cudaGraphExec_t
  int pool_ = 0;           // the allocator's private pool for this graph
};

}  // namespace axon::cuda
