// CUDA runtime layer: error checks that never leak into later calls, per-device state, copies.

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "axon/cuda.h"
#include "cuda_hooks.h"
#include "runtime.h"

namespace axon::cuda_detail {

namespace {

// Errors after which the context cannot run anything again (CUDA Runtime API, "sticky" errors).
bool is_sticky(cudaError_t err) {
  switch (err) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorECCUncorrectable:
    case cudaErrorLaunchTimeout:
    case cudaErrorAssert:
      return true;
    default:
      return false;
  }
}

}  // namespace

void check(cudaError_t err, const char* call, int device) {
  if (err == cudaSuccess) return;
  cudaGetLastError();  // clear it: the next call must not report this error as its own
  const std::string message = cat("CUDA ", call, " on cuda:", device, " failed: ", cudaGetErrorName(err), ": ", cudaGetErrorString(err));
  if (is_sticky(err)) {
    std::fprintf(stderr,
                 "axon: %s\naxon: this error leaves the GPU context unusable; stopping the process "
                 "(a kernel queued earlier may be the cause: rerun with CUDA_LAUNCH_BLOCKING=1 to find it)\n",
                 message.c_str());
    std::fflush(stderr);
    std::exit(EXIT_FAILURE);  // under MPI the exit status aborts the whole job
  }
  throw std::runtime_error(message);
}

void check_cublas(cublasStatus_t status, const char* call, int device) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  // An execution failure may be a sticky CUDA error underneath: that one ends the process.
  check(cudaGetLastError(), call, device);
  throw std::runtime_error(cat("cuBLAS ", call, " on cuda:", device, " failed: ", cublasGetStatusString(status)));
}

void check_launch(const char* kernel, int device) { check(cudaGetLastError(), kernel, device); }

namespace {
// Devices on which Axon made a context. cudaSetDevice creates a device's primary context at once
// (since CUDA 12), so restoring the thread's "previous" device 0 after every call would give each
// rank a context, and hundreds of MB, on GPU 0 as well (PyTorch's MaybeSetDevice avoids the same).
std::atomic<uint64_t> g_initialized{0};
bool initialized(int device) { return device >= 0 && device < 64 && (g_initialized.load() >> device) & 1u; }
}  // namespace

DeviceGuard::DeviceGuard(int device) {
  check(cudaGetDevice(&previous_), "cudaGetDevice", device);
  if (previous_ != device) check(cudaSetDevice(device), "cudaSetDevice", device);
}

DeviceGuard::~DeviceGuard() {
  int current = -1;
  if (cudaGetDevice(&current) == cudaSuccess && current != previous_ && initialized(previous_)) cudaSetDevice(previous_);
  cudaGetLastError();
}

DeviceState& state(int device) {
  static std::mutex mutex;
  static std::vector<DeviceState*>* states = new std::vector<DeviceState*>;  // never destroyed
  std::lock_guard<std::mutex> lock(mutex);
  if (device < 0) throw std::runtime_error(cuda_detail::cat("cuda:", device, ": negative device index"));
  const int count = cuda::device_count();
  if (device >= count)
    throw std::runtime_error(cuda_detail::cat("cuda:", device, ": no such device (", count, " CUDA device", count == 1 ? "" : "s", " visible)"));
  if (states->size() <= static_cast<size_t>(device)) states->resize(static_cast<size_t>(device) + 1, nullptr);
  DeviceState*& s = (*states)[static_cast<size_t>(device)];
  if (!s) {
    DeviceGuard guard(device);
    auto* fresh = new DeviceState;
    check(cudaStreamCreateWithFlags(&fresh->stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags", device);
    check_cublas(cublasCreate(&fresh->cublas), "cublasCreate", device);
    check_cublas(cublasSetStream(fresh->cublas, fresh->stream), "cublasSetStream", device);
    // Exact f32 GEMM, as PyTorch's default (no TF32): results match the CPU within 1e-5.
    check_cublas(cublasSetMathMode(fresh->cublas, CUBLAS_DEFAULT_MATH), "cublasSetMathMode", device);
    // A workspace of our own (cuBLAS's recommendation for Hopper: 32 MiB), so that no GEMM
    // allocates one while a CUDA graph is being captured.
    constexpr size_t kCublasWorkspace = size_t{32} << 20;
    check(cudaMalloc(&fresh->cublas_workspace, kCublasWorkspace), "cudaMalloc (cuBLAS workspace)", device);
    check_cublas(cublasSetWorkspace(fresh->cublas, fresh->cublas_workspace, kCublasWorkspace), "cublasSetWorkspace", device);
    s = fresh;
    if (device < 64) g_initialized.fetch_or(uint64_t{1} << device);
  }
  return *s;
}

void copy(Device dst_device, void* dst, Device src_device, const void* src, size_t bytes) {
  const int device = dst_device.is_cuda() ? dst_device.index : src_device.index;
  DeviceGuard guard(device);
  cudaStream_t stream = state(device).stream;
  if (dst_device.is_cuda() && src_device.is_cuda() && dst_device.index != src_device.index) {
    // The source's kernels run on the source device's stream: let them finish first.
    {
      DeviceGuard source(src_device.index);
      check(cudaStreamSynchronize(state(src_device.index).stream), "cudaStreamSynchronize before a peer copy",
            src_device.index);
    }
    check(cudaMemcpyPeerAsync(dst, dst_device.index, src, src_device.index, bytes, stream), "cudaMemcpyPeerAsync", device);
    check(cudaStreamSynchronize(stream), "cudaStreamSynchronize after a peer copy", device);
    return;
  }
  const cudaMemcpyKind kind = dst_device.is_cpu()   ? cudaMemcpyDeviceToHost
                              : src_device.is_cpu() ? cudaMemcpyHostToDevice
                                                    : cudaMemcpyDeviceToDevice;
  check(cudaMemcpyAsync(dst, src, bytes, kind, stream), "cudaMemcpyAsync", device);
  // Host memory may be freed or read as soon as we return: wait for copies that touch it.
  if (kind != cudaMemcpyDeviceToDevice) check(cudaStreamSynchronize(stream), "cudaStreamSynchronize after a copy", device);
}

}  // namespace axon::cuda_detail

namespace axon::cuda {

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // no driver or no GPU: not an error for the caller, and not for later calls
    return 0;
  }
  return count;
}

bool built_with_cuda() { return true; }

std::string device_name(int device) {
  const int count = device_count();
  if (device < 0 || device >= count)
    throw std::runtime_error(cuda_detail::cat("cuda:", device, ": no such device (", count, " CUDA device", count == 1 ? "" : "s", " visible)"));
  cudaDeviceProp prop{};
  cuda_detail::check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties", device);
  return prop.name;
}

void synchronize(int device) {
  cuda_detail::DeviceGuard guard(device);
  cuda_detail::check(cudaStreamSynchronize(cuda_detail::state(device).stream), "cudaStreamSynchronize", device);
}

void* compute_stream(int device) { return cuda_detail::state(device).stream; }

int device_for_local_rank(int local_rank) {
  const int count = device_count();
  if (count == 0) throw std::runtime_error(cuda_detail::cat("local rank ", local_rank, ": no CUDA device is visible"));
  return local_rank % count;
}

Graph::Graph(int device) : device_(device) { cuda_detail::state(device); }

Graph::~Graph() {
  cuda_detail::DeviceGuard guard(device_);
  // Replays may still be queued: the graph and its memory are released after they finish.
  cudaStreamSynchronize(cuda_detail::state(device_).stream);
  if (exec_) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
  if (graph_) cudaGraphDestroy(static_cast<cudaGraph_t>(graph_));
  cudaGetLastError();
  if (pool_) {
    try {
      cuda_detail::release_graph_pool(device_, pool_);
    } catch (...) {  // a destructor must not throw; the blocks stay reserved
    }
  }
}

void Graph::capture(const std::function<void()>& work) {
  using namespace cuda_detail;
  if (exec_) throw std::runtime_error(cat("cuda:", device_, ": this CUDA graph is already captured"));
  DeviceGuard guard(device_);
  cudaStream_t stream = state(device_).stream;
  pool_ = begin_graph_pool(device_);
  // Thread-local mode: this thread may not make calls that are unsafe during a capture (they fail
  // instead of silently breaking it); other threads are not affected.
  check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture", device_);
  cudaGraph_t graph = nullptr;
  try {
    work();
  } catch (...) {
    cudaStreamEndCapture(stream, &graph);
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
    end_graph_pool(device_);
    throw;
  }
  const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
  end_graph_pool(device_);
  if (ended != cudaSuccess) {
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
    throw std::runtime_error(cat("CUDA graph capture on cuda:", device_, " failed: ", cudaGetErrorName(ended), ": ",
                                 cudaGetErrorString(ended),
                                 " (the captured work waited for the device or copied to or from host memory)"));
  }
  graph_ = graph;
  cudaGraphExec_t exec = nullptr;
  check(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate", device_);
  exec_ = exec;
}

void Graph::replay() {
  using namespace cuda_detail;
  if (!exec_) throw std::logic_error(cat("cuda:", device_, ": replay() of a CUDA graph that was not captured"));
  DeviceGuard guard(device_);
  check(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec_), state(device_).stream), "cudaGraphLaunch", device_);
}

}  // namespace axon::cuda
