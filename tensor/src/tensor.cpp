#include "axon/tensor.h"

#include <fmt/format.h>

#include <atomic>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif
#include <new>
#include <stdexcept>

#include "axon/allocator.h"
#include "axon/autograd.h"
#include "axon/backend.h"
#include "blas.h"
#include "cpu/onednn_conv.h"

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
  // Bounded so that every element count, and its size in bytes for the widest dtype, fits int64.
  constexpr int64_t kMaxElements = std::numeric_limits<int64_t>::max() / 8;
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw std::invalid_argument("tensor: negative dimension in shape " + shape_str(shape));
    if (__builtin_mul_overflow(n, d, &n) || n > kMaxElements)
      throw std::length_error("tensor: shape " + shape_str(shape) + " has too many elements");
  }
  return n;
}

// ---- Storage ----

Storage::Storage(size_t bytes, Device device) : bytes_(bytes), device_(device) {
  data_ = device_allocate(device, bytes);
}

Storage::~Storage() {
  if (owned_) device_free(device_, data_, bytes_);
}

std::shared_ptr<Storage> Storage::borrowed(void* data, size_t bytes, Device device) {
  return std::shared_ptr<Storage>(new Storage(data, bytes, device, false));
}

// ---- dtypes and devices ----

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::bf16: return "bf16";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
  }
  return "?";
}

DType parse_dtype(std::string_view text) {
  for (DType d : {DType::f32, DType::f64, DType::bf16, DType::i32, DType::i64})
    if (text == dtype_name(d)) return d;
  throw std::invalid_argument(fmt::format("unknown dtype '{}' (expected f32, f64, bf16, i32 or i64)", text));
}

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::bf16: return 2;
    case DType::i32: return 4;
    case DType::i64: return 8;
  }
  return 0;
}

bool is_floating(DType dtype) { return dtype == DType::f32 || dtype == DType::f64 || dtype == DType::bf16; }

std::string Device::str() const { return is_cpu() ? "cpu" : fmt::format("cuda:{}", index); }

Device parse_device(std::string_view text) {
  if (text == "cpu") return Device::cpu();
  if (text == "cuda") return Device::cuda(0);
  if (text.starts_with("cuda:")) {
    std::string_view digits = text.substr(5);
    int index = 0;
    auto [end, err] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
    if (!digits.empty() && err == std::errc() && end == digits.data() + digits.size() && index >= 0 && digits[0] != '+')
      return Device::cuda(index);
  }
  throw std::invalid_argument(fmt::format("unknown device '{}' (expected cpu, cuda or cuda:K with K >= 0)", text));
}

// ---- creation ----

static std::shared_ptr<TensorImpl> make_impl(const Shape& shape, TensorOptions options) {
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->dtype = options.dtype;
  impl->storage = std::make_shared<Storage>(static_cast<size_t>(shape_numel(shape)) * dtype_size(options.dtype),
                                            options.device);
  return impl;
}

Tensor Tensor::empty(const Shape& shape, TensorOptions options) { return Tensor(make_impl(shape, options)); }

Tensor Tensor::zeros(const Shape& shape, TensorOptions options) { return full(shape, 0.0, options); }

Tensor Tensor::ones(const Shape& shape, TensorOptions options) { return full(shape, 1.0, options); }

Tensor Tensor::full(const Shape& shape, double value, TensorOptions options) {
  Tensor t = empty(shape, options);
  t.fill(value);
  return t;
}

Tensor Tensor::scalar(double value, TensorOptions options) { return full({}, value, options); }

namespace {
template <class T>
Tensor from_host(const Shape& shape, const std::vector<T>& values, TensorOptions options, DType host_dtype) {
  if (shape_numel(shape) != static_cast<int64_t>(values.size()))
    throw std::invalid_argument(fmt::format("tensor: {} values do not fill shape {}", values.size(), shape_str(shape)));
  Tensor host = Tensor::empty(shape, {host_dtype, Device::cpu()});
  std::copy(values.begin(), values.end(), static_cast<T*>(host.raw_data()));
  return host.to(options.dtype).to(options.device);
}
}  // namespace

Tensor Tensor::from_vector(const Shape& shape, const std::vector<float>& values, TensorOptions options) {
  return from_host(shape, values, options, DType::f32);
}
Tensor Tensor::from_vector(const Shape& shape, const std::vector<double>& values, TensorOptions options) {
  return from_host(shape, values, options, DType::f64);
}
Tensor Tensor::from_vector(const Shape& shape, const std::vector<int32_t>& values, TensorOptions options) {
  return from_host(shape, values, options, DType::i32);
}
Tensor Tensor::from_vector(const Shape& shape, const std::vector<int64_t>& values, TensorOptions options) {
  return from_host(shape, values, options, DType::i64);
}

Tensor Tensor::from_blob(void* data, const Shape& shape, TensorOptions options) {
  const size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(options.dtype);
  return view_of(Storage::borrowed(data, bytes, options.device), 0, shape, options.dtype);
}

Tensor Tensor::view_of(std::shared_ptr<Storage> storage, size_t offset, const Shape& shape, DType dtype) {
  const size_t n = static_cast<size_t>(shape_numel(shape));
  const size_t elements = storage ? storage->bytes() / dtype_size(dtype) : 0;
  if (!storage || offset > elements || n > elements - offset)
    throw std::out_of_range(fmt::format("tensor: view of shape {} ({}) at offset {} exceeds storage of {} elements",
                                        shape_str(shape), dtype_name(dtype), offset, elements));
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->dtype = dtype;
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
DType Tensor::dtype() const { return checked().dtype; }
Device Tensor::device() const { return checked().storage->device(); }

void* Tensor::raw_data() {
  const TensorImpl& impl = checked();
  return static_cast<char*>(impl.storage->data()) + impl.offset * dtype_size(impl.dtype);
}

const void* Tensor::raw_data() const {
  const TensorImpl& impl = checked();
  return static_cast<const char*>(impl.storage->data()) + impl.offset * dtype_size(impl.dtype);
}

namespace {
template <class T>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, float>) return DType::f32;
  else if constexpr (std::is_same_v<T, double>) return DType::f64;
  else if constexpr (std::is_same_v<T, bf16>) return DType::bf16;
  else if constexpr (std::is_same_v<T, int32_t>) return DType::i32;
  else return DType::i64;
}

void check_host_access(const Tensor& t, DType wanted) {
  if (t.dtype() != wanted || !t.device().is_cpu())
    throw std::logic_error(fmt::format("tensor: host access as {} to a {} tensor on {} of shape {} (convert with .to() first)",
                                       dtype_name(wanted), dtype_name(t.dtype()), t.device().str(), shape_str(t.shape())));
}
}  // namespace

template <class T>
T* Tensor::data_as() {
  check_host_access(*this, dtype_of<T>());
  return static_cast<T*>(raw_data());
}
template <class T>
const T* Tensor::data_as() const {
  check_host_access(*this, dtype_of<T>());
  return static_cast<const T*>(raw_data());
}
template float* Tensor::data_as<float>();
template double* Tensor::data_as<double>();
template bf16* Tensor::data_as<bf16>();
template int32_t* Tensor::data_as<int32_t>();
template int64_t* Tensor::data_as<int64_t>();
template const float* Tensor::data_as<float>() const;
template const double* Tensor::data_as<double>() const;
template const bf16* Tensor::data_as<bf16>() const;
template const int32_t* Tensor::data_as<int32_t>() const;
template const int64_t* Tensor::data_as<int64_t>() const;

float* Tensor::data() { return data_as<float>(); }
const float* Tensor::data() const { return data_as<float>(); }

std::span<float> Tensor::values() { return {data(), static_cast<size_t>(numel())}; }
std::span<const float> Tensor::values() const { return {data(), static_cast<size_t>(numel())}; }

std::vector<double> Tensor::to_double_vector() const {
  Tensor host = to(Device::cpu()).to(DType::f64);
  const double* p = host.data_as<double>();
  return {p, p + host.numel()};
}

std::vector<float> Tensor::to_vector() const {
  Tensor host = to(Device::cpu()).to(DType::f32);
  return {host.data(), host.data() + host.numel()};
}

double Tensor::item_double() const {
  if (numel() != 1)
    throw std::invalid_argument("tensor: item() needs a one-element tensor, got shape " + shape_str(shape()));
  return to_double_vector()[0];
}

float Tensor::item() const { return static_cast<float>(item_double()); }

const std::shared_ptr<Storage>& Tensor::storage() const { return checked().storage; }
size_t Tensor::offset() const { return checked().offset; }

Tensor Tensor::to(Device target) const {
  if (device() == target) return *this;
  Tensor out = empty(shape(), {dtype(), target});
  copy_bytes(target, out.raw_data(), device(), raw_data(), nbytes());
  return record("to_device", out, {*this}, [source = device()](const Tensor& g, GradSlots& grads) {
    grads.add(0, g.to(source));
  });
}

Tensor Tensor::to(DType target) const {
  if (dtype() == target) return *this;
  Tensor out = empty(shape(), {target, device()});
  backend(device()).cast(out, *this);
  if (!is_floating(target) || !is_floating(dtype())) return out;  // integers carry no gradient
  return record("to_dtype", out, {*this}, [source = dtype()](const Tensor& g, GradSlots& grads) {
    grads.add(0, g.to(source));
  });
}

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

  Tensor out = view_of(storage(), offset(), resolved, dtype());
  Shape input_shape = shape();
  return record("reshape", out, {*this}, [input_shape](const Tensor& g, GradSlots& grads) {
    grads.add(0, g.reshape(input_shape));
  });
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape(), options());
  copy_bytes(device(), out.raw_data(), device(), raw_data(), nbytes());
  return record("clone", out, {*this}, [](const Tensor& g, GradSlots& grads) { grads.add(0, g); });
}

Tensor Tensor::detach() const { return view_of(storage(), offset(), shape(), dtype()); }

void Tensor::copy_from(const Tensor& other) {
  if (other.numel() != numel() || other.dtype() != dtype())
    throw std::invalid_argument(fmt::format("tensor: copy_from of shape {} ({}) into shape {} ({})", shape_str(other.shape()),
                                            dtype_name(other.dtype()), shape_str(shape()), dtype_name(dtype())));
  copy_bytes(device(), raw_data(), other.device(), other.raw_data(), nbytes());
}

void Tensor::fill(double value) {
  if (numel() > 0) backend(device()).fill(*this, value);
}

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
  if (checked().grad) Tensor(impl_->grad).fill(0.0);
}

uint64_t Tensor::add_grad_ready_hook(GradHook hook) {
  checked();
  static std::atomic<uint64_t> next_handle{1};
  const uint64_t handle = next_handle++;
  impl_->grad_ready_hooks.emplace_back(handle, std::move(hook));
  return handle;
}

void Tensor::remove_grad_ready_hook(uint64_t handle) {
  checked();
  std::erase_if(impl_->grad_ready_hooks, [handle](const auto& entry) { return entry.first == handle; });
}

// ---- threads ----

void set_num_threads(int threads) {
  if (threads < 1) throw std::invalid_argument(fmt::format("threads must be >= 1, got {}", threads));
  blas::set_num_threads(threads);
  cpu_detail::onednn_set_num_threads(threads);  // its OpenMP team, for the convolution
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
