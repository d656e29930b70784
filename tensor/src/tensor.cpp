#include "axon/tensor.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <unordered_map>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif
#include <new>
#include <stdexcept>

#include "axon/autograd.h"
#include "blas.h"

namespace axon {

std::string shape_str(const Shape& shape) {
  std::string s = "{";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "}";
}

int64_t shape_numel(const Shape& shape) {
  // Bounded so that every element count, and its size in bytes, fits the index types used.
  constexpr int64_t kMaxElements = std::numeric_limits<int64_t>::max() / static_cast<int64_t>(sizeof(float));
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw std::invalid_argument("tensor: negative dimension in shape " + shape_str(shape));
    if (__builtin_mul_overflow(n, d, &n) || n > kMaxElements)
      throw std::length_error("tensor: shape " + shape_str(shape) + " has too many elements");
  }
  return n;
}

// ---- Storage ----

namespace {

// Training allocates the same large activations and gradients every step. Fresh large blocks
// come from mmap and cost a page fault per 4 KiB on first touch, so large freed blocks are kept
// for reuse, by exact size, up to a bound. Small blocks go straight to malloc, which pools them.
class BlockCache {
 public:
  static constexpr size_t kMinCachedBytes = 64 * 1024;
  static constexpr size_t kMaxCachedBytes = size_t{1} << 30;

  void* acquire(size_t bytes) {
    if (bytes >= kMinCachedBytes) {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(bytes);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        cached_ -= bytes;
        return p;
      }
    }
    void* p = std::aligned_alloc(64, bytes);
    if (!p) throw std::bad_alloc();
    return p;
  }

  void release(void* p, size_t bytes) {
    if (bytes >= kMinCachedBytes) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (cached_ + bytes <= kMaxCachedBytes) {
        free_[bytes].push_back(p);
        cached_ += bytes;
        return;
      }
    }
    std::free(p);
  }

 private:
  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  size_t cached_ = 0;
};

// Never destroyed: tensors in static storage may be freed after other statics are gone.
BlockCache& block_cache() {
  static BlockCache* cache = new BlockCache;
  return *cache;
}

// 64-byte alignment suits AVX-512 loads and cache lines; aligned_alloc needs a multiple of it.
size_t storage_bytes(size_t floats) { return std::max<size_t>(64, (floats * sizeof(float) + 63) / 64 * 64); }

}  // namespace

Storage::Storage(size_t size) : size_(size) {
  data_ = static_cast<float*>(block_cache().acquire(storage_bytes(size)));
}

Storage::~Storage() { block_cache().release(data_, storage_bytes(size_)); }

// ---- creation ----

static std::shared_ptr<TensorImpl> make_impl(const Shape& shape) {
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->storage = std::make_shared<Storage>(static_cast<size_t>(shape_numel(shape)));
  return impl;
}

Tensor Tensor::empty(const Shape& shape) { return Tensor(make_impl(shape)); }

Tensor Tensor::zeros(const Shape& shape) { return full(shape, 0.0f); }

Tensor Tensor::ones(const Shape& shape) { return full(shape, 1.0f); }

Tensor Tensor::full(const Shape& shape, float value) {
  Tensor t = empty(shape);
  t.fill(value);
  return t;
}

Tensor Tensor::scalar(float value) { return full({}, value); }

Tensor Tensor::from_vector(const Shape& shape, const std::vector<float>& values) {
  if (shape_numel(shape) != static_cast<int64_t>(values.size()))
    throw std::invalid_argument(fmt::format("tensor: {} values do not fill shape {}", values.size(), shape_str(shape)));
  Tensor t = empty(shape);
  std::copy(values.begin(), values.end(), t.data());
  return t;
}

Tensor Tensor::view_of(std::shared_ptr<Storage> storage, size_t offset, const Shape& shape) {
  size_t n = static_cast<size_t>(shape_numel(shape));
  if (!storage || offset + n > storage->size())
    throw std::out_of_range(fmt::format("tensor: view of shape {} at offset {} exceeds storage of {} floats",
                                        shape_str(shape), offset, storage ? storage->size() : 0));
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->storage = std::move(storage);
  impl->offset = offset;
  return Tensor(impl);
}

// ---- metadata and data ----

const TensorImpl& Tensor::checked() const {
  if (!impl_) throw std::logic_error("tensor: use of an undefined tensor");
  return *impl_;
}

const Shape& Tensor::shape() const { return checked().shape; }

int64_t Tensor::size(int64_t axis) const {
  int64_t d = dim();
  int64_t a = axis < 0 ? axis + d : axis;
  if (a < 0 || a >= d)
    throw std::out_of_range(fmt::format("tensor: axis {} out of range for shape {}", axis, shape_str(shape())));
  return shape()[static_cast<size_t>(a)];
}

int64_t Tensor::numel() const { return shape_numel(shape()); }

float* Tensor::data() {
  const TensorImpl& impl = checked();
  return impl.storage->data() + impl.offset;
}

const float* Tensor::data() const {
  const TensorImpl& impl = checked();
  return impl.storage->data() + impl.offset;
}

std::span<float> Tensor::values() { return {data(), static_cast<size_t>(numel())}; }
std::span<const float> Tensor::values() const { return {data(), static_cast<size_t>(numel())}; }

float Tensor::item() const {
  if (numel() != 1)
    throw std::invalid_argument("tensor: item() needs a one-element tensor, got shape " + shape_str(shape()));
  return data()[0];
}

std::vector<float> Tensor::to_vector() const {
  auto v = values();
  return {v.begin(), v.end()};
}

const std::shared_ptr<Storage>& Tensor::storage() const { return checked().storage; }
size_t Tensor::offset() const { return checked().offset; }

Tensor Tensor::reshape(const Shape& new_shape) const {
  Shape resolved = new_shape;
  int64_t known = 1;
  int inferred = -1;
  for (size_t i = 0; i < resolved.size(); ++i) {
    if (resolved[i] == -1) {
      if (inferred >= 0) throw std::invalid_argument("reshape: more than one -1 in " + shape_str(new_shape));
      inferred = static_cast<int>(i);
    } else if (resolved[i] < 0) {
      throw std::invalid_argument("reshape: negative dimension in " + shape_str(new_shape));
    } else if (__builtin_mul_overflow(known, resolved[i], &known)) {
      throw std::length_error("reshape: shape " + shape_str(new_shape) + " has too many elements");
    }
  }
  int64_t n = numel();
  if (inferred >= 0) {
    if (known == 0 || n % known != 0)
      throw std::invalid_argument(fmt::format("reshape: cannot reshape {} into {}", shape_str(shape()), shape_str(new_shape)));
    resolved[static_cast<size_t>(inferred)] = n / known;
  }
  if (shape_numel(resolved) != n)
    throw std::invalid_argument(fmt::format("reshape: cannot reshape {} into {}", shape_str(shape()), shape_str(new_shape)));

  Tensor out = view_of(storage(), offset(), resolved);
  Shape input_shape = shape();
  return record("reshape", out, {*this}, [input_shape](const Tensor& g, GradSlots& grads) {
    grads.add(0, g.reshape(input_shape));
  });
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape());
  std::copy_n(data(), numel(), out.data());
  return record("clone", out, {*this}, [](const Tensor& g, GradSlots& grads) { grads.add(0, g); });
}

Tensor Tensor::detach() const { return view_of(storage(), offset(), shape()); }

void Tensor::copy_from(const Tensor& other) {
  if (other.numel() != numel())
    throw std::invalid_argument(fmt::format("tensor: copy_from of shape {} into shape {}", shape_str(other.shape()),
                                            shape_str(shape())));
  std::memmove(data(), other.data(), static_cast<size_t>(numel()) * sizeof(float));
}

void Tensor::fill(float value) { std::fill_n(data(), numel(), value); }

// ---- autograd accessors ----

bool Tensor::requires_grad() const { return checked().requires_grad; }

Tensor& Tensor::set_requires_grad(bool value) {
  if (checked().grad_fn)
    throw std::logic_error("tensor: set_requires_grad on a non-leaf tensor (it was computed by an op)");
  impl_->requires_grad = value;
  return *this;
}

bool Tensor::is_leaf() const { return checked().grad_fn == nullptr; }

Tensor Tensor::grad() const { return Tensor(checked().grad); }

void Tensor::set_grad(const Tensor& grad) {
  if (grad.defined() && grad.shape() != shape())
    throw std::invalid_argument(fmt::format("tensor: gradient of shape {} for a tensor of shape {}",
                                            shape_str(grad.shape()), shape_str(shape())));
  checked();
  impl_->grad = grad.impl_ptr();
}

void Tensor::zero_grad() {
  if (checked().grad) Tensor(impl_->grad).fill(0.0f);
}

void Tensor::add_grad_ready_hook(GradHook hook) {
  checked();
  impl_->grad_ready_hooks.push_back(std::move(hook));
}

// ---- threads ----

void set_num_threads(int threads) {
  if (threads < 1) throw std::invalid_argument(fmt::format("threads must be >= 1, got {}", threads));
  blas::set_num_threads(threads);
}

int num_threads() { return blas::num_threads(); }

std::string blas_kernels() { return blas::kernel_name(); }

#if defined(__x86_64__) || defined(__i386__)
// MXCSR bits: FTZ (flush results to zero) and DAZ (read denormal inputs as zero).
static constexpr unsigned kFlushDenormals = 0x8040;
FlushDenormalsGuard::FlushDenormalsGuard() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | kFlushDenormals); }
FlushDenormalsGuard::~FlushDenormalsGuard() { _mm_setcsr(saved_); }
#else
FlushDenormalsGuard::FlushDenormalsGuard() {}
FlushDenormalsGuard::~FlushDenormalsGuard() {}
#endif

}  // namespace axon
