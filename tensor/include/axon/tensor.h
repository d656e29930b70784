// Axon's tensor: an n-d array of one dtype on one device, with shared, contiguous storage and
// reverse-mode autograd.
//
// A Tensor is a cheap handle (a shared pointer) to a TensorImpl. Copying a Tensor shares the data,
// like PyTorch. Views (reshape, flat-buffer slices) share the Storage at an offset; every tensor is
// row-major contiguous, which keeps kernels simple and fast (docs/architecture.md, "Strides", says
// why there are no strided views). Ops dispatch on the device to one kernel per device
// (axon/backend.h); the default dtype is f32 and the default device the CPU.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "axon/dtype.h"

namespace axon {

using Shape = std::vector<int64_t>;

// "{2, 3}" — the format used in every error message.
std::string shape_str(const Shape& shape);
// Number of elements; throws on a negative dimension.
int64_t shape_numel(const Shape& shape);

// A block of device memory (64-byte aligned on the CPU, 256 on CUDA) from the device's caching
// allocator (axon/allocator.h). Owned by every tensor that views it. Throws std::bad_alloc, or
// std::runtime_error naming the device when the device does not exist or is out of memory.
class Storage {
 public:
  Storage(size_t bytes, Device device);
  // Memory owned by someone else (a caller's buffer), never freed here: it must outlive the storage.
  static std::shared_ptr<Storage> borrowed(void* data, size_t bytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() { return data_; }
  const void* data() const { return data_; }
  // Typed access without checks, for code that owns a buffer of known type (flat parameters).
  template <class T>
  T* as() { return static_cast<T*>(data_); }
  template <class T>
  const T* as() const { return static_cast<const T*>(data_); }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  Storage(void* data, size_t bytes, Device device, bool owned)
      : data_(data), bytes_(bytes), device_(device), owned_(owned) {}

  size_t bytes_ = 0;
  Device device_;
  bool owned_ = true;
};

// What a new tensor is made of: element type and device (f32 on the CPU unless told).
struct TensorOptions {
  DType dtype = DType::f32;
  Device device = Device::cpu();
};

class Tensor;
struct Node;

using GradHook = std::function<void(const Tensor& grad)>;

struct TensorImpl {
  Shape shape;
  DType dtype = DType::f32;
  std::shared_ptr<Storage> storage;  // its device is the tensor's device
  size_t offset = 0;                 // in elements of dtype, into storage

  // Autograd state. A leaf is a tensor without grad_fn; only leaves accumulate into `grad`.
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;
  std::shared_ptr<Node> grad_fn;
  // Called once per backward pass, as soon as this leaf's gradient is complete. Data-parallel
  // training uses this to start all-reducing a bucket while backward is still running.
  std::vector<std::pair<uint64_t, GradHook>> grad_ready_hooks;  // (handle, hook), in the order added
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- creation ----
  static Tensor empty(const Shape& shape, TensorOptions options = {});  // uninitialized
  static Tensor zeros(const Shape& shape, TensorOptions options = {});
  static Tensor ones(const Shape& shape, TensorOptions options = {});
  // `value` is converted to the dtype (rounded for bf16, truncated toward zero for integers).
  static Tensor full(const Shape& shape, double value, TensorOptions options = {});
  static Tensor scalar(double value, TensorOptions options = {});
  // Host values, converted to options.dtype and copied to options.device.
  static Tensor from_vector(const Shape& shape, const std::vector<float>& values, TensorOptions options = {});
  static Tensor from_vector(const Shape& shape, const std::vector<double>& values, TensorOptions options);
  static Tensor from_vector(const Shape& shape, const std::vector<int32_t>& values, TensorOptions options);
  static Tensor from_vector(const Shape& shape, const std::vector<int64_t>& values, TensorOptions options);
  // A tensor over memory the caller owns and keeps alive (PyTorch's from_blob): no copy is made.
  static Tensor from_blob(void* data, const Shape& shape, TensorOptions options = {});
  // A view of `storage` starting at `offset` elements (parameters living in one flat buffer).
  // Throws std::out_of_range when the view does not fit the storage.
  static Tensor view_of(std::shared_ptr<Storage> storage, size_t offset, const Shape& shape, DType dtype = DType::f32);

  // ---- metadata ----
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  int64_t dim() const { return static_cast<int64_t>(shape().size()); }
  int64_t size(int64_t axis) const;  // negative axis counts from the end
  int64_t numel() const;
  DType dtype() const;
  Device device() const;
  TensorOptions options() const { return {dtype(), device()}; }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }

  // ---- data ----
  // Host access to f32 values: throws std::logic_error naming the dtype or device when the tensor
  // is not f32 on the CPU (use .to() first).
  float* data();
  const float* data() const;
  // Host access to values of type T (float, double, bf16, int32_t, int64_t); checked likewise.
  template <class T>
  T* data_as();
  template <class T>
  const T* data_as() const;
  // The first element's address on the tensor's device, for kernels (no checks).
  void* raw_data();
  const void* raw_data() const;
  std::span<float> values();
  std::span<const float> values() const;
  // The single value of a one-element tensor, converted to float (copied from the device).
  float item() const;
  double item_double() const;
  // All values converted to float (copied from the device).
  std::vector<float> to_vector() const;
  std::vector<double> to_double_vector() const;

  // ---- conversion ----
  // A copy on `device` (this tensor itself when it already lives there). Differentiable: the
  // gradient flows back to the source device.
  Tensor to(Device device) const;
  // A copy converted to `dtype` (this tensor itself when it already has it). Differentiable for
  // floating dtypes. Float to integer truncates toward zero.
  Tensor to(DType dtype) const;
  const std::shared_ptr<Storage>& storage() const;
  size_t offset() const;

  // A view with a new shape (one dimension may be -1). Differentiable.
  Tensor reshape(const Shape& shape) const;
  // A copy with its own storage. Differentiable.
  Tensor clone() const;
  // The same data, cut from the autograd graph.
  Tensor detach() const;
  // Copies values from `other` (same number of elements) into this tensor's storage; not recorded.
  void copy_from(const Tensor& other);
  void fill(double value);

  // ---- autograd ----
  bool requires_grad() const;
  Tensor& set_requires_grad(bool value = true);  // leaves only
  bool is_leaf() const;
  Tensor grad() const;           // undefined until a backward pass reaches this leaf
  void set_grad(const Tensor& grad);
  void zero_grad();               // fills an existing grad with zeros (keeps its storage)
  // Calls `hook` once per backward pass, as soon as this leaf's gradient is complete. Returns a
  // handle for remove_grad_ready_hook (a reducer that goes away removes its hooks).
  uint64_t add_grad_ready_hook(GradHook hook);
  // Removes a hook by its handle; unknown handles are ignored (removing twice is harmless).
  void remove_grad_ready_hook(uint64_t handle);
  // Reverse-mode differentiation from a one-element tensor (gradient 1), or with an explicit
  // output gradient of the same shape. Leaf gradients are accumulated (added) into .grad.
  void backward() const;
  void backward(const Tensor& grad_output) const;

  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

 private:
  const TensorImpl& checked() const;
  std::shared_ptr<TensorImpl> impl_;
};

// Sets the threads used by BLAS and Axon's own kernels (1 = single-threaded).
void set_num_threads(int threads);
int num_threads();
// While alive, this thread treats denormal floats as zero (x86 FTZ and DAZ; no-op elsewhere).
// Tiny gradients and second moments turn denormal late in training and make every operation on
// them many times slower; no result that matters lives in that range.
class FlushDenormalsGuard {
 public:
  FlushDenormalsGuard();
  ~FlushDenormalsGuard();
  FlushDenormalsGuard(const FlushDenormalsGuard&) = delete;
  FlushDenormalsGuard& operator=(const FlushDenormalsGuard&) = delete;

 private:
  unsigned saved_ = 0;
};

// The OpenBLAS kernel family in use ("SkylakeX", "Haswell", ...): see tensor/src/blas.h.
std::string blas_kernels();

}  // namespace axon
