// Axon's tensor: an n-d fp32 array with shared, contiguous storage and reverse-mode autograd.
//
// A Tensor is a cheap handle (a shared pointer) to a TensorImpl. Copying a Tensor shares the data,
// like PyTorch. Views (reshape, flat-buffer slices) share the Storage at an offset; every tensor is
// row-major contiguous, which keeps kernels simple and fast.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace axon {

using Shape = std::vector<int64_t>;

// "{2, 3}" — the format used in every error message.
std::string shape_str(const Shape& shape);
// Number of elements; throws on a negative dimension.
int64_t shape_numel(const Shape& shape);

// A block of 64-byte aligned floats. Owned by every tensor that views it.
class Storage {
 public:
  explicit Storage(size_t size);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  float* data() { return data_; }
  const float* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  float* data_ = nullptr;
  size_t size_ = 0;
};

class Tensor;
struct Node;

using GradHook = std::function<void(const Tensor& grad)>;

struct TensorImpl {
  Shape shape;
  std::shared_ptr<Storage> storage;
  size_t offset = 0;  // in floats, into storage

  // Autograd state. A leaf is a tensor without grad_fn; only leaves accumulate into `grad`.
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;
  std::shared_ptr<Node> grad_fn;
  // Called once per backward pass, as soon as this leaf's gradient is complete. Data-parallel
  // training uses this to start all-reducing a bucket while backward is still running.
  std::vector<GradHook> grad_ready_hooks;
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- creation ----
  static Tensor empty(const Shape& shape);  // uninitialized
  static Tensor zeros(const Shape& shape);
  static Tensor ones(const Shape& shape);
  static Tensor full(const Shape& shape, float value);
  static Tensor scalar(float value);
  static Tensor from_vector(const Shape& shape, const std::vector<float>& values);
  // A view of `storage` starting at `offset` (used for parameters living in one flat buffer).
  static Tensor view_of(std::shared_ptr<Storage> storage, size_t offset, const Shape& shape);

  // ---- metadata ----
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  int64_t dim() const { return static_cast<int64_t>(shape().size()); }
  int64_t size(int64_t axis) const;  // negative axis counts from the end
  int64_t numel() const;

  // ---- data ----
  float* data();
  const float* data() const;
  std::span<float> values();
  std::span<const float> values() const;
  float item() const;  // the single value of a one-element tensor
  std::vector<float> to_vector() const;
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
  void fill(float value);

  // ---- autograd ----
  bool requires_grad() const;
  Tensor& set_requires_grad(bool value = true);  // leaves only
  bool is_leaf() const;
  Tensor grad() const;           // undefined until a backward pass reaches this leaf
  void set_grad(const Tensor& grad);
  void zero_grad();               // fills an existing grad with zeros (keeps its storage)
  void add_grad_ready_hook(GradHook hook);
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
