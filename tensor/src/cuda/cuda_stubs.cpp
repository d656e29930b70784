// The CUDA entry points of a build without CUDA: each says so, naming the device asked for.
#include <fmt/format.h>

#include <stdexcept>

#include "cuda_hooks.h"

namespace axon::cuda_detail {

namespace {
[[noreturn]] void no_cuda(int device) {
  throw std::runtime_error(fmt::format(
      "device cuda:{}: this Axon was built without CUDA (configure with -DAXON_WITH_CUDA=ON where nvcc is installed)",
      device));
}
}  // namespace

void* allocate(int device, size_t) { no_cuda(device); }
void free(int, void*, size_t) noexcept {}
AllocatorStats stats(int device) { no_cuda(device); }
void empty_cache(int device) { no_cuda(device); }
int begin_graph_pool(int device) { no_cuda(device); }
void end_graph_pool(int) {}
void release_graph_pool(int, int) {}
Backend& backend(int device) { no_cuda(device); }
void copy(Device dst_device, void*, Device src_device, const void*, size_t) {
  no_cuda(dst_device.is_cuda() ? dst_device.index : src_device.index);
}

}  // namespace axon::cuda_detail

#include "axon/cuda.h"

namespace axon::cuda {

int device_count() { return 0; }
bool built_with_cuda() { return false; }
std::string device_name(int device) { cuda_detail::backend(device); return {}; }
void synchronize(int device) { cuda_detail::backend(device); }
void* compute_stream(int device) { cuda_detail::backend(device); return nullptr; }
int device_for_local_rank(int local_rank) {
  throw std::runtime_error(fmt::format("local rank {}: this Axon was built without CUDA", local_rank));
}

Graph::Graph(int device) : device_(device) { cuda_detail::backend(device); }
Graph::~Graph() = default;
void Graph::capture(const std::function<void()>&) { cuda_detail::backend(device_); }
void Graph::replay() { cuda_detail::backend(device_); }

}  // namespace axon::cuda
