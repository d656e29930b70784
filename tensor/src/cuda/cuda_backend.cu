// The CUDA kernels: element-wise and reduction kernels written here, GEMM through cuBLAS.
//
// Like the CPU backend, each kernel is a template over the element type T (float, double,
// __nv_bfloat16) computing in Acc<T> (float, or double for f64). Every kernel is queued on the
// device's compute stream; reductions use a fixed order (no floating-point atomics), so results
// are reproducible run to run.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "cuda_hooks.h"
#include "../kernel_support.h"
#include "../activation_kernels.h"
#include "../attention_kernels.h"
#include "../conv_kernels.h"
#include "../layer_kernels.h"
#include "../norm_shape_kernels.h"
#include "kernel_common.cuh"
#include "runtime.h"

namespace axon::cuda_detail {

namespace {

constexpr int kMaxDims = 8;

// Shapes and broadcast strides passed to kernels by value.
struct Dims {
  int rank = 0;
  int64_t size[kMaxDims] = {};
  int64_t stride_a[kMaxDims] = {};
  int64_t stride_b[kMaxDims] = {};
};

using kernels::broadcast_strides;

Dims make_dims(const Shape& out, const Shape& a, const Shape& b, const char* kernel) {
  if (out.size() > kMaxDims)
    throw std::invalid_argument(cat("cuda kernel ", kernel, ": shape ", shape_str(out), " has more than ", kMaxDims, " dimensions"));
  if (a.size() > out.size() || b.size() > out.size())
    throw std::invalid_argument(cat("cuda kernel ", kernel, ": operands ", shape_str(a), " and ", shape_str(b),
                                    " have more dimensions than the output ", shape_str(out)));
  Dims d;
  d.rank = static_cast<int>(out.size());
  const auto sa = broadcast_strides(a, out), sb = broadcast_strides(b, out);
  for (int k = 0; k < d.rank; ++k) {
    d.size[k] = out[k];
    d.stride_a[k] = sa[k];
    d.stride_b[k] = sb[k];
  }
  return d;
}

// Whether `operand` broadcasts to `out` along leading dims only: without its leading 1s it is
// out's trailing dims, so element i of out reads element i % numel(operand).
bool is_suffix_of(const Shape& operand, const Shape& out) {
  size_t first = 0;
  while (first < operand.size() && operand[first] == 1) ++first;
  const size_t len = operand.size() - first;
  if (len > out.size()) return false;
  return std::equal(operand.begin() + static_cast<std::ptrdiff_t>(first), operand.end(),
                    out.end() - static_cast<std::ptrdiff_t>(len));
}

// ---- kernels ----

template <class T>
__global__ void fill_kernel(T* out, int64_t n, T value) {
  AXON_KERNEL_GRID_STRIDE(i, n) out[i] = value;
}

template <class D, class S>
__global__ void cast_kernel(D* dst, const S* src, int64_t n) {
  AXON_KERNEL_GRID_STRIDE(i, n) {
    if constexpr (std::is_same_v<S, bf16_t>) {
      const float v = __bfloat162float(src[i]);
      if constexpr (std::is_same_v<D, bf16_t>) dst[i] = src[i];
      else dst[i] = static_cast<D>(v);
    } else if constexpr (std::is_same_v<D, bf16_t>) {
      dst[i] = __float2bfloat16(static_cast<float>(src[i]));
    } else {
      dst[i] = static_cast<D>(src[i]);
    }
  }
}

template <class A>
__device__ __forceinline__ A apply_binary(BinaryOp op, A x, A y) {
  switch (op) {
    case BinaryOp::add: return x + y;
    case BinaryOp::sub: return x - y;
    case BinaryOp::mul: return x * y;
    case BinaryOp::div: return x / y;
    case BinaryOp::maximum: return x != x || y != y ? x + y : (x > y ? x : y);
    case BinaryOp::minimum: return x != x || y != y ? x + y : (x < y ? x : y);
  }
  return x;
}

template <class T>
__global__ void binary_same_kernel(BinaryOp op, const T* a, const T* b, T* out, int64_t n) {
  AXON_KERNEL_GRID_STRIDE(i, n) store(out, i, apply_binary(op, load(a, i), load(b, i)));
}

template <class T>
__global__ void binary_broadcast_kernel(BinaryOp op, const T* a, const T* b, T* out, int64_t n, Dims d) {
  AXON_KERNEL_GRID_STRIDE(i, n) {
    int64_t rest = i, ja = 0, jb = 0;
    for (int k = d.rank - 1; k >= 0; --k) {
      const int64_t c = rest % d.size[k];
      rest /= d.size[k];
      ja += c * d.stride_a[k];
      jb += c * d.stride_b[k];
    }
    store(out, i, apply_binary(op, load(a, ja), load(b, jb)));
  }
}

// Operands broadcast only along leading dims (a bias row, a scalar): element i reads a[i % la] and
// b[i % lb], in 32-bit arithmetic when the sizes allow (64-bit division is slow on the GPU).
template <class T, class I>
__global__ void binary_suffix_kernel(BinaryOp op, const T* a, const T* b, T* out, I n, I la, I lb) {
  for (I i = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += static_cast<I>(gridDim.x) * blockDim.x)
    store(out, i, apply_binary(op, load(a, la == n ? i : i % la), load(b, lb == n ? i : i % lb)));
}

template <class A>
__device__ __forceinline__ A apply_unary(UnaryOp op, A v, A s) {
  switch (op) {
    case UnaryOp::neg: return -v;
    case UnaryOp::exp: return exp(v);
    case UnaryOp::log: return log(v);
    case UnaryOp::relu: return v > A(0) ? v : A(0);
    case UnaryOp::sigmoid: return A(1) / (A(1) + exp(-v));
    case UnaryOp::tanh: return tanh(v);
    case UnaryOp::square: return v * v;
    case UnaryOp::add_scalar: return v + s;
    case UnaryOp::mul_scalar: return v * s;
    case UnaryOp::sqrt: return sqrt(v);
    case UnaryOp::abs: return fabs(v);
    case UnaryOp::sign: return v > A(0) ? A(1) : (v < A(0) ? A(-1) : v);
    case UnaryOp::max_scalar: return v < s ? s : v;
    case UnaryOp::min_scalar: return v > s ? s : v;
  }
  return v;
}

template <class T>
__global__ void unary_kernel(UnaryOp op, const T* x, T* out, int64_t n, Acc<T> s) {
  AXON_KERNEL_GRID_STRIDE(i, n) store(out, i, apply_unary(op, load(x, i), s));
}

template <class T>
__global__ void unary_backward_kernel(UnaryOp op, const T* g, const T* saved, T* out, int64_t n) {
  using A = Acc<T>;
  AXON_KERNEL_GRID_STRIDE(i, n) {
    const A gv = load(g, i), v = load(saved, i);
    A r = A(0);
    switch (op) {
      case UnaryOp::exp: r = gv * v; break;
      case UnaryOp::log: r = gv / v; break;
      case UnaryOp::relu: r = v > A(0) ? gv : A(0); break;
      case UnaryOp::sigmoid: r = gv * v * (A(1) - v); break;
      case UnaryOp::tanh: r = gv * (A(1) - v * v); break;
      case UnaryOp::square: r = A(2) * v * gv; break;
      default: break;
    }
    store(out, i, r);
  }
}

// One thread per output element; it walks the reduced dimensions in a fixed order.
// d.size: g's shape; d.stride_a: g's strides; d.stride_b: 1 where the dim is reduced, else 0.
template <class T>
__global__ void reduce_to_kernel(const T* g, T* out, int64_t out_n, int64_t reduced_n, Dims d) {
  using A = Acc<T>;
  AXON_KERNEL_GRID_STRIDE(o, out_n) {
    // Coordinates of this output element in the kept dims.
    int64_t base = 0, rest = o;
    for (int k = d.rank - 1; k >= 0; --k) {
      if (d.stride_b[k]) continue;
      const int64_t c = rest % d.size[k];
      rest /= d.size[k];
      base += c * d.stride_a[k];
    }
    A total = A(0);
    for (int64_t r = 0; r < reduced_n; ++r) {
      int64_t off = base, rr = r;
      for (int k = d.rank - 1; k >= 0; --k) {
        if (!d.stride_b[k]) continue;
        const int64_t c = rr % d.size[k];
        rr /= d.size[k];
        off += c * d.stride_a[k];
      }
      total += load(g, off);
    }
    store(out, o, total);
  }
}

// Deterministic sum: each block sums a fixed slice in double, then one block sums the partials.
template <class T>
__global__ void partial_sums_kernel(const T* x, int64_t n, double* partial) {
  __shared__ double shared[kThreads];
  double total = 0.0;
  AXON_KERNEL_GRID_STRIDE(i, n) total += static_cast<double>(load(x, i));
  shared[threadIdx.x] = total;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s /= 2) {
    if (static_cast<int>(threadIdx.x) < s) shared[threadIdx.x] += shared[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = shared[0];
}

template <class T>
__global__ void finish_sum_kernel(const double* partial, int blocks, T* out, double scale) {
  __shared__ double shared[kThreads];
  double total = 0.0;
  for (int i = threadIdx.x; i < blocks; i += kThreads) total += partial[i];
  shared[threadIdx.x] = total;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s /= 2) {
    if (static_cast<int>(threadIdx.x) < s) shared[threadIdx.x] += shared[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) store(out, 0, static_cast<Acc<T>>(shared[0] * scale));
}

template <class T>
__global__ void sum_axis_kernel(const T* x, T* out, AxisSplit s, float beta) {
  using A = Acc<T>;
  AXON_KERNEL_GRID_STRIDE(lane, s.outer * s.inner) {
    const int64_t o = lane / s.inner, i = lane % s.inner;
    A total = beta != 0.0f ? load(out, lane) : A(0);
    for (int64_t k = 0; k < s.n; ++k) total += load(x, (o * s.n + k) * s.inner + i);
    store(out, lane, total);
  }
}

// Sums over the middle axis with a 32×32 block per 32 lanes of `inner`: thread (tx, ty) adds the
// rows k ≡ ty (mod 32) of lane tx in order, unrolled so several loads are in flight, then ty = 0
// adds the 32 partials in order. Fixed order (reproducible), and 32× more threads than lanes: the
// one-thread-per-lane kernel above is latency-bound when the axis is long and the lanes few (a bias
// gradient {batch, units} → {units} with units = 10 walked 1024 dependent loads per thread).
constexpr int kTile = 32;
template <class T>
__global__ void sum_axis_tiled_kernel(const T* x, T* out, AxisSplit s, float beta) {
  using A = Acc<T>;
  __shared__ A partial[kTile][kTile + 1];
  const int64_t lane = static_cast<int64_t>(blockIdx.x) * kTile + threadIdx.x;
  const int64_t o = blockIdx.y;
  A total = A(0);
  if (lane < s.inner) {
    const T* base = x + o * s.n * s.inner + lane;
    const int64_t step = static_cast<int64_t>(kTile) * s.inner;
    int64_t k = threadIdx.y;
    A t0 = A(0), t1 = A(0), t2 = A(0), t3 = A(0);
    for (; k + 3 * kTile < s.n; k += 4 * kTile) {
      const T* p = base + k * s.inner;
      t0 += load(p, 0);
      t1 += load(p, step);
      t2 += load(p, 2 * step);
      t3 += load(p, 3 * step);
    }
    for (; k < s.n; k += kTile) t0 += load(base, k * s.inner);
    total = (t0 + t1) + (t2 + t3);
  }
  partial[threadIdx.y][threadIdx.x] = total;
  __syncthreads();
  if (threadIdx.y == 0 && lane < s.inner) {
    A sum = beta != 0.0f ? load(out, o * s.inner + lane) : A(0);
    for (int r = 0; r < kTile; ++r) sum += partial[r][threadIdx.x];
    store(out, o * s.inner + lane, sum);
  }
}

template <class T>
__global__ void transpose_kernel(const T* x, T* out, int64_t rows, int64_t cols) {
  AXON_KERNEL_GRID_STRIDE(idx, rows * cols) {
    const int64_t i = idx / cols, j = idx % cols;
    out[j * rows + i] = x[idx];
  }
}

// One thread per lane along the axis (softmax over small axes, such as classes).
template <class T>
__global__ void softmax_kernel(const T* x, T* out, AxisSplit s, bool log_space) {
  using A = Acc<T>;
  AXON_KERNEL_GRID_STRIDE(lane, s.outer * s.inner) {
    const int64_t base = (lane / s.inner) * s.n * s.inner + lane % s.inner;
    A max_v = load(x, base);
    for (int64_t k = 1; k < s.n; ++k) max_v = max(max_v, load(x, base + k * s.inner));
    double total = 0.0;
    for (int64_t k = 0; k < s.n; ++k) total += exp(static_cast<double>(load(x, base + k * s.inner) - max_v));
    if (log_space) {
      const A log_total = static_cast<A>(log(total));
      for (int64_t k = 0; k < s.n; ++k) store(out, base + k * s.inner, load(x, base + k * s.inner) - max_v - log_total);
    } else {
      const double inv = 1.0 / total;
      for (int64_t k = 0; k < s.n; ++k)
        store(out, base + k * s.inner, static_cast<A>(exp(static_cast<double>(load(x, base + k * s.inner) - max_v)) * inv));
    }
  }
}

template <class T>
__global__ void softmax_backward_kernel(const T* y, const T* g, T* out, AxisSplit s, bool log_space) {
  using A = Acc<T>;
  AXON_KERNEL_GRID_STRIDE(lane, s.outer * s.inner) {
    const int64_t base = (lane / s.inner) * s.n * s.inner + lane % s.inner;
    double total = 0.0;
    for (int64_t k = 0; k < s.n; ++k) {
      const int64_t j = base + k * s.inner;
      total += log_space ? static_cast<double>(load(g, j)) : static_cast<double>(load(g, j)) * load(y, j);
    }
    const A t = static_cast<A>(total);
    for (int64_t k = 0; k < s.n; ++k) {
      const int64_t j = base + k * s.inner;
      store(out, j, log_space ? load(g, j) - exp(load(y, j)) * t : load(y, j) * (load(g, j) - t));
    }
  }
}

// One thread per row: probabilities, and the row's loss for the deterministic mean below.
template <class T>
__global__ void cross_entropy_rows_kernel(const T* logits, const int32_t* labels, T* probs, double* row_loss,
                                          int64_t batch, int64_t classes) {
  using A = Acc<T>;
  AXON_KERNEL_GRID_STRIDE(r, batch) {
    const T* row = logits + r * classes;
    T* prow = probs + r * classes;
    A max_v = load(row, 0);
    for (int64_t c = 1; c < classes; ++c) max_v = max(max_v, load(row, c));
    double denom = 0.0;
    for (int64_t c = 0; c < classes; ++c) denom += static_cast<double>(exp(load(row, c) - max_v));
    const A inv = static_cast<A>(1.0 / denom);
    for (int64_t c = 0; c < classes; ++c) store(prow, c, exp(load(row, c) - max_v) * inv);
    const int32_t label = labels[r];
    row_loss[r] = (label < 0 || label >= classes) ? __longlong_as_double(0x7ff8000000000000ll)
                                                  : log(denom) - static_cast<double>(load(row, label) - max_v);
  }
}

template <class T>
__global__ void cross_entropy_backward_kernel(const T* probs, const int32_t* labels, const float* g32,
                                              const double* g64, T* out, int64_t batch, int64_t classes, float beta) {
  using A = Acc<T>;
  const A scale = (g64 ? static_cast<A>(g64[0]) : static_cast<A>(g32[0])) / static_cast<A>(batch);
  AXON_KERNEL_GRID_STRIDE(i, batch * classes) {
    const int64_t r = i / classes, c = i % classes;
    const A d = (load(probs, i) - (c == labels[r] ? A(1) : A(0))) * scale;
    store(out, i, beta == 0.0f ? d : load(out, i) + d);
  }
}

// One thread per element of the output; rows are copied in units of T (4 or 8 bytes, or 1).
template <class T>
__global__ void gather_rows_kernel(const T* src, const int64_t* idx, T* out, int64_t k, int64_t row) {
  AXON_KERNEL_GRID_STRIDE(i, k * row) out[i] = src[idx[i / row] * row + i % row];
}

template <class T>
__device__ int64_t row_argmax(const T* x, int64_t r, int64_t cols) {
  int64_t best = 0;
  for (int64_t c = 1; c < cols; ++c)
    if (load(x, r * cols + c) > load(x, r * cols + best)) best = c;
  return best;
}

template <class T>
__global__ void argmax_kernel(const T* x, int64_t* out, int64_t rows, int64_t cols) {
  AXON_KERNEL_GRID_STRIDE(r, rows) out[r] = row_argmax(x, r, cols);
}

// Integer counts are exact in a double and addition of integers is order-independent, so the
// atomic keeps the result deterministic.
template <class T>
__global__ void correct_kernel(const T* x, const int32_t* labels, double* out, int64_t rows, int64_t cols) {
  AXON_KERNEL_GRID_STRIDE(r, rows) {
    if (row_argmax(x, r, cols) == labels[r]) atomicAdd(out, 1.0);
  }
}

template <class T>
__global__ void finite_kernel(const T* x, int64_t n, float* out) {
  AXON_KERNEL_GRID_STRIDE(i, n) {
    if (!isfinite(static_cast<double>(load(x, i)))) *out = 0.0f;  // every writer writes the same value
  }
}

// Both set *nonfinite = 1 when an updated parameter is inf or NaN (every writer writes the same).
__global__ void adam_kernel(AdamStep h, float* p, const float* g, float* m, float* v, float* vmax, int64_t n,
                            float* nonfinite) {
  if (h.device_step) {  // one thread per block derives the step's scalars (two pow in double)
    __shared__ float scalars[2];
    if (threadIdx.x == 0) {
      kernels::adam_scalars_from_step(h);
      scalars[0] = h.step_size;
      scalars[1] = h.bc2_sqrt;
    }
    __syncthreads();
    h.step_size = scalars[0];
    h.bc2_sqrt = scalars[1];
  }
  AXON_KERNEL_GRID_STRIDE(i, n) {
    kernels::adam_element(h, p[i], g[i], m[i], v[i], vmax ? &vmax[i] : nullptr);
    if (kernels::not_finite_bits(p[i])) *nonfinite = 1.0f;
  }
}

__global__ void sgd_kernel(SgdStep h, float* p, const float* g, float* buf, int64_t n, float* nonfinite) {
  AXON_KERNEL_GRID_STRIDE(i, n) {
    kernels::sgd_element(h, p[i], g[i], buf ? &buf[i] : nullptr);
    if (kernels::not_finite_bits(p[i])) *nonfinite = 1.0f;
  }
}

// ---- dispatch ----

template <class T>
T* dp(Tensor& t) {
  return kernels::ptr<T>(t);
}
template <class T>
const T* dp(const Tensor& t) {
  return kernels::ptr<T>(t);
}

template <class F>
void floating(DType dtype, const char* kernel, F&& f) {
  kernels::dispatch_floating<bf16_t>(dtype, "cuda", kernel, std::forward<F>(f));
}
template <class F>
void any_dtype(DType dtype, F&& f) {
  kernels::dispatch_any<bf16_t>(dtype, std::forward<F>(f));
}

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device) : device_(device), stream_(state(device).stream), cublas_(state(device).cublas) {}

  const char* name() const override { return "cuda"; }

  void fill(Tensor& out, double value) override {
    DeviceGuard guard(device_);
    const int64_t n = out.numel();
    any_dtype(out.dtype(), [&]<class T>() {
      T v;
      if constexpr (std::is_same_v<T, bf16_t>) v = __float2bfloat16(static_cast<float>(value));
      else v = static_cast<T>(value);
      fill_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(dp<T>(out), n, v);
    });
    check_launch("fill kernel launch", device_);
  }

  void cast(Tensor& dst, const Tensor& src) override {
    DeviceGuard guard(device_);
    const int64_t n = src.numel();
    if (n == 0) return;
    any_dtype(src.dtype(), [&]<class S>() {
      any_dtype(dst.dtype(), [&]<class D>() {
        cast_kernel<D, S><<<blocks_for(n), kThreads, 0, stream_>>>(dp<D>(dst), dp<S>(src), n);
      });
    });
    check_launch("cast kernel launch", device_);
  }

  void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) override {
    DeviceGuard guard(device_);
    const int64_t n = out.numel();
    floating(out.dtype(), "binary", [&]<class T>() {
      if (a.shape() == out.shape() && b.shape() == out.shape()) {
        binary_same_kernel<T><<<blocks_for(n), kThreads, 0, stream_>>>(op, dp<T>(a), dp<T>(b), dp<T>(out), n);
      } else if (is_suffix_of(a.shape(), out.shape()) && is_suffix_of(b.shape(), out.shape())) {
        const int64_t la = std::max<int64_t>(a.numel(), 1), lb = std::max<int64_t>(b.numel(), 1);
        if (n <= INT32_MAX)
          binary_suffix_kernel<T, uint32_t><<<blocks_for(n), kThreads, 0, stream_>>>(
              op, dp<T>(a), dp<T>(b), dp<T>(out), static_cast<uint32_t>(n), static_cast<uint32_t>(la), static_cast<uint32_t>(lb));
        else
          binary_suffix_kernel<T, uint64_t><<<blocks_for(n), kThreads, 0, stream_>>>(
              op, dp<T>(a), dp<T>(b), dp<T>(out), static_cast<uint64_t>(n), static_cast<uint64_t>(la), static_cast<uint64_t>(lb));
      } else {
        const Dims d = make_dims(out.shape(), a.shape(), b.shape(), "binary");
        binary_broadcast_kernel<T><<<blocks_for(n), kThreads, 0, stream_>>>(op, dp<T>(a), dp<T>(b), dp<T>(out), n, d);
      }
    });
    check_launch("binary kernel launch", device_);
  }

  void unary(UnaryOp op, const Tensor& x, double scalar, Tensor& out) override {
    DeviceGuard guard(device_);
    const int64_t n = x.numel();
    floating(x.dtype(), "unary", [&]<class T>() {
      unary_kernel<T><<<blocks_for(n), kThreads, 0, stream_>>>(op, dp<T>(x), dp<T>(out), n, static_cast<Acc<T>>(scalar));
    });
    check_launch("unary kernel launch", device_);
  }

  void unary_backward(UnaryOp op, const Tensor& g, const Tensor& saved, Tensor& out) override {
    DeviceGuard guard(device_);
    const int64_t n = g.numel();
    floating(g.dtype(), "unary_backward", [&]<class T>() {
      unary_backward_kernel<T><<<blocks_for(n), kThreads, 0, stream_>>>(op, dp<T>(g), dp<T>(saved), dp<T>(out), n);
    });
    check_launch("unary_backward kernel launch", device_);
  }

  void reduce_to(const Tensor& g, Tensor& out) override {
    DeviceGuard guard(device_);
    const Shape& gs = g.shape();
    // stride_a: g's own strides; stride_b: 1 where out broadcasts (the dim is summed away).
    Dims d = make_dims(gs, gs, gs, "reduce_to");
    const auto so = broadcast_strides(out.shape(), gs);
    int64_t reduced = 1;
    for (int k = 0; k < d.rank; ++k) {
      d.stride_b[k] = (so[k] == 0 && gs[k] != 1) ? 1 : 0;
      if (d.stride_b[k]) reduced *= gs[k];
    }
    // The usual case (a bias gradient {batch, units} → {units}): the summed dims form one run,
    // so this is a sum over the middle axis of {outer, reduced, inner}.
    int first = d.rank, last = -1;
    for (int k = 0; k < d.rank; ++k)
      if (d.stride_b[k]) first = std::min(first, k), last = k;
    bool one_run = true;
    for (int k = first; k <= last; ++k) one_run = one_run && (d.stride_b[k] || gs[k] == 1);
    if (one_run) {
      AxisSplit s;
      for (int k = 0; k < d.rank; ++k) (k < first ? s.outer : k <= last ? s.n : s.inner) *= gs[k];
      sum_axis(g, s, 0.0f, out);
      return;
    }
    const int64_t n = out.numel();
    floating(g.dtype(), "reduce_to", [&]<class T>() {
      reduce_to_kernel<T><<<blocks_for(n), kThreads, 0, stream_>>>(dp<T>(g), dp<T>(out), n, reduced, d);
    });
    check_launch("reduce_to kernel launch", device_);
  }

  void sum_all(const Tensor& x, Tensor& out) override {
    DeviceGuard guard(device_);
    const int64_t n = x.numel();
    const int blocks = static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 1024));
    Tensor partial = Tensor::empty({blocks}, {DType::f64, Device::cuda(device_)});
    floating(x.dtype(), "sum_all", [&]<class T>() {
      partial_sums_kernel<T><<<blocks, kThreads, 0, stream_>>>(dp<T>(x), n, dp<double>(partial));
      finish_sum_kernel<T><<<1, kThreads, 0, stream_>>>(dp<double>(partial), blocks, dp<T>(out), 1.0);
    });
    check_launch("sum kernel launch", device_);
  }

  void sum_axis(const Tensor& x, const AxisSplit& s, float beta, Tensor& out) override {
    DeviceGuard guard(device_);
    if (s.outer * s.inner == 0) return;
    floating(x.dtype(), "sum_axis", [&]<class T>() {
      // Long axes over few lanes (bias gradients, column sums) go to the tiled kernel.
      if (s.n >= 64 && s.outer <= 65535 && s.inner < 64 * int64_t{1024} * 1024) {
        const dim3 grid(static_cast<unsigned>((s.inner + kTile - 1) / kTile), static_cast<unsigned>(s.outer));
        sum_axis_tiled_kernel<T><<<grid, dim3(kTile, kTile), 0, stream_>>>(dp<T>(x), dp<T>(out), s, beta);
      } else {
        sum_axis_kernel<T><<<blocks_for(s.outer * s.inner), kThreads, 0, stream_>>>(dp<T>(x), dp<T>(out), s, beta);
      }
    });
    check_launch("sum_axis kernel launch", device_);
  }

  void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const Tensor& a, const Tensor& b,
            float beta, Tensor& c) override {
    if (m == 0 || n == 0) return;
    DeviceGuard guard(device_);
    if (k == 0) {
      if (beta == 0.0f) fill(c, 0.0);
      return;
    }
    if (m > INT32_MAX || n > INT32_MAX || k > INT32_MAX)
      throw std::length_error(cat("cuBLAS gemm on cuda:", device_, ": dimensions ", m, "x", n, "x", k, " exceed int"));
    // Row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: swap the operands.
    const int M = static_cast<int>(m), N = static_cast<int>(n), K = static_cast<int>(k);
    const int lda = trans_a ? M : K, ldb = trans_b ? K : N;
    const cublasOperation_t ta = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    cudaDataType_t type = CUDA_R_32F;
    cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
    double alpha64 = alpha, beta64 = beta;
    const void* pa = &alpha;
    const void* pb = &beta;
    switch (c.dtype()) {
      case DType::f32: break;
      case DType::bf16: type = CUDA_R_16BF; break;  // f32 accumulation, f32 scalars
      case DType::f64:
        type = CUDA_R_64F;
        compute = CUBLAS_COMPUTE_64F;
        pa = &alpha64;
        pb = &beta64;
        break;
      default:
        throw std::invalid_argument(cat("cuda kernel gemm: dtype ", dtype_name(c.dtype()), " is not supported"));
    }
    check_cublas(cublasGemmEx(cublas_, tb, ta, N, M, K, pa, b.raw_data(), type, ldb, a.raw_data(), type, lda, pb,
                              c.raw_data(), type, N, compute, CUBLAS_GEMM_DEFAULT),
                 "cublasGemmEx", device_);
  }

  void gemm_ld(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const Tensor& a, int64_t lda,
               const Tensor& b, int64_t ldb, float beta, Tensor& c, int64_t ldc) override {
    if (m == 0 || n == 0) return;
    DeviceGuard guard(device_);
    if (k == 0) throw std::invalid_argument(cat("cuda kernel gemm_ld on cuda:", device_, ": k is 0"));
    if (m > INT32_MAX || n > INT32_MAX || k > INT32_MAX || lda > INT32_MAX || ldb > INT32_MAX || ldc > INT32_MAX)
      throw std::length_error(cat("cuBLAS gemm_ld on cuda:", device_, ": dimensions ", m, "x", n, "x", k, " exceed int"));
    // Row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: swap the operands.
    const int M = static_cast<int>(m), N = static_cast<int>(n), K = static_cast<int>(k);
    const cublasOperation_t ta = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    cudaDataType_t type = CUDA_R_32F;
    cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
    double alpha64 = alpha, beta64 = beta;
    const void* pa = &alpha;
    const void* pb = &beta;
    switch (c.dtype()) {
      case DType::f32: break;
      case DType::bf16: type = CUDA_R_16BF; break;
      case DType::f64:
        type = CUDA_R_64F;
        compute = CUBLAS_COMPUTE_64F;
        pa = &alpha64;
        pb = &beta64;
        break;
      default:
        throw std::invalid_argument(cat("cuda kernel gemm_ld: dtype ", dtype_name(c.dtype()), " is not supported"));
    }
    check_cublas(cublasGemmEx(cublas_, tb, ta, N, M, K, pa, b.raw_data(), type, static_cast<int>(ldb), a.raw_data(), type,
                              static_cast<int>(lda), pb, c.raw_data(), type, static_cast<int>(ldc), compute,
                              CUBLAS_GEMM_DEFAULT),
                 "cublasGemmEx", device_);
  }

  // Convolution and pooling: cuda/conv_kernels.cu.
  void im2col(const Tensor& x, const ConvGeometry& g, int64_t group, Tensor& col) override {
    cuda_detail::im2col(device_, x, g, group, col);
  }
  void col2im(const Tensor& col, const ConvGeometry& g, int64_t group, Tensor& dx) override {
    cuda_detail::col2im(device_, col, g, group, dx);
  }
  void pool(PoolKind kind, const Tensor& x, const ConvGeometry& g, Tensor& out, Tensor* argmax) override {
    cuda_detail::pool(device_, kind, x, g, out, argmax);
  }
  void pool_backward(PoolKind kind, const Tensor& grad, const ConvGeometry& g, const Tensor* argmax,
                     Tensor& dx) override {
    cuda_detail::pool_backward(device_, kind, grad, g, argmax, dx);
  }
  void batched_transpose(const Tensor& x, int64_t batch, int64_t rows, int64_t cols, Tensor& out) override {
    cuda_detail::batched_transpose(device_, x, batch, rows, cols, out);
  }

  void transpose2d(const Tensor& x, Tensor& out) override {
    DeviceGuard guard(device_);
    const int64_t r = x.size(0), c = x.size(1);
    floating(x.dtype(), "transpose2d", [&]<class T>() {
      transpose_kernel<T><<<blocks_for(r * c), kThreads, 0, stream_>>>(dp<T>(x), dp<T>(out), r, c);
    });
    check_launch("transpose kernel launch", device_);
  }

  void softmax(const Tensor& x, const AxisSplit& s, bool log_space, Tensor& out) override {
    DeviceGuard guard(device_);
    floating(x.dtype(), "softmax", [&]<class T>() {
      softmax_kernel<T><<<blocks_for(s.outer * s.inner), kThreads, 0, stream_>>>(dp<T>(x), dp<T>(out), s, log_space);
    });
    check_launch("softmax kernel launch", device_);
  }

  void softmax_backward(const Tensor& y, const Tensor& g, const AxisSplit& s, bool log_space, Tensor& out) override {
    DeviceGuard guard(device_);
    floating(y.dtype(), "softmax_backward", [&]<class T>() {
      softmax_backward_kernel<T><<<blocks_for(s.outer * s.inner), kThreads, 0, stream_>>>(dp<T>(y), dp<T>(g), dp<T>(out),
                                                                                         s, log_space);
    });
    check_launch("softmax_backward kernel launch", device_);
  }

  // Activations: cuda/activation_kernels.cu.
  void activation(ActivationOp op, const ActivationParams& p, const Tensor& x, Tensor& out) override {
    cuda_detail::activation(device_, op, p, x, out);
  }
  void activation_backward(ActivationOp op, const ActivationParams& p, const Tensor& g, const Tensor& x,
                           Tensor& out) override {
    cuda_detail::activation_backward(device_, op, p, g, x, out);
  }
  void log_sumexp(const Tensor& x, const AxisSplit& s, Tensor& out) override {
    cuda_detail::log_sumexp(device_, x, s, out);
  }

  // Dropout and normalization: cuda/layer_kernels.cu.
  void dropout(const Tensor& x, const DropoutParams& p, Tensor& out) override {
    cuda_detail::dropout(device_, x, p, out);
  }
  void norm(const Tensor& x, const Tensor& gamma, const Tensor* beta, const AxisSplit& s, const NormParams& p, Tensor& y,
            Tensor& mean, Tensor& rstd) override {
    cuda_detail::norm(device_, x, gamma, beta, s, p, y, mean, rstd);
  }
  void norm_backward(const Tensor& x, const Tensor& gamma, const Tensor& g, const Tensor& mean, const Tensor& rstd,
                     const AxisSplit& s, const NormParams& p, Tensor* dx, Tensor* dgamma, Tensor* dbeta) override {
    cuda_detail::norm_backward(device_, x, gamma, g, mean, rstd, s, p, dx, dgamma, dbeta);
  }

  // Group-statistics normalization and shape kernels: cuda/norm_shape_kernels.cu.
  void group_norm(const Tensor& x, const Tensor* gamma, const Tensor* beta, const GroupNormParams& p, Tensor& y,
                  Tensor& mean, Tensor& rstd, Tensor* running_mean, Tensor* running_var) override {
    cuda_detail::group_norm(device_, x, gamma, beta, p, y, mean, rstd, running_mean, running_var);
  }
  void group_norm_backward(const Tensor& x, const Tensor* gamma, const Tensor& g, const Tensor& mean, const Tensor& rstd,
                           const GroupNormParams& p, Tensor* dx, Tensor* dgamma, Tensor* dbeta) override {
    cuda_detail::group_norm_backward(device_, x, gamma, g, mean, rstd, p, dx, dgamma, dbeta);
  }
  void axis_copy(const Tensor& src, int64_t src_n, int64_t src_offset, Tensor& dst, int64_t dst_n, int64_t dst_offset,
                 int64_t outer, int64_t inner, int64_t count) override {
    cuda_detail::axis_copy(device_, src, src_n, src_offset, dst, dst_n, dst_offset, outer, inner, count);
  }
  void permute(const Tensor& x, const std::vector<int64_t>& perm, Tensor& out) override {
    cuda_detail::permute(device_, x, perm, out);
  }
  void resize(const Tensor& x, const ResizeParams& p, Tensor& out) override { cuda_detail::resize(device_, x, p, out); }
  void resize_backward(const Tensor& g, const ResizeParams& p, Tensor& dx) override {
    cuda_detail::resize_backward(device_, g, p, dx);
  }

  void cross_entropy(const Tensor& logits, const Tensor& labels, Tensor& probs, Tensor& loss) override {
    DeviceGuard guard(device_);
    const int64_t batch = logits.size(0), classes = logits.size(1);
    Tensor row_loss = Tensor::empty({batch}, {DType::f64, Device::cuda(device_)});
    const int blocks = static_cast<int>(std::min<int64_t>((batch + kThreads - 1) / kThreads, 1024));
    Tensor partial = Tensor::empty({blocks}, {DType::f64, Device::cuda(device_)});
    floating(logits.dtype(), "cross_entropy", [&]<class T>() {
      cross_entropy_rows_kernel<T><<<blocks_for(batch), kThreads, 0, stream_>>>(
          dp<T>(logits), dp<int32_t>(labels), dp<T>(probs), dp<double>(row_loss), batch, classes);
    });
    partial_sums_kernel<double><<<blocks, kThreads, 0, stream_>>>(dp<double>(row_loss), batch, dp<double>(partial));
    if (loss.dtype() == DType::f64)
      finish_sum_kernel<double><<<1, kThreads, 0, stream_>>>(dp<double>(partial), blocks, dp<double>(loss),
                                                             1.0 / static_cast<double>(batch));
    else
      finish_sum_kernel<float><<<1, kThreads, 0, stream_>>>(dp<double>(partial), blocks, dp<float>(loss),
                                                            1.0 / static_cast<double>(batch));
    check_launch("cross_entropy kernel launch", device_);
  }

  void cross_entropy_backward(const Tensor& probs, const Tensor& labels, const Tensor& g, float beta,
                              Tensor& out) override {
    DeviceGuard guard(device_);
    const int64_t batch = probs.size(0), classes = probs.size(1);
    floating(probs.dtype(), "cross_entropy_backward", [&]<class T>() {
      cross_entropy_backward_kernel<T><<<blocks_for(batch * classes), kThreads, 0, stream_>>>(
          dp<T>(probs), dp<int32_t>(labels), g.dtype() == DType::f64 ? nullptr : dp<float>(g),
          g.dtype() == DType::f64 ? dp<double>(g) : nullptr, dp<T>(out), batch, classes, beta);
    });
    check_launch("cross_entropy_backward kernel launch", device_);
  }

  void index_add_rows(const Tensor& src, const Tensor& indices, Tensor& out) override {
    cuda_detail::index_add_rows(device_, src, indices, out);
  }
  void attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* mask, const AttentionParams& p,
                 Tensor& out, Tensor& lse) override {
    cuda_detail::attention(device_, q, k, v, mask, p, out, lse);
  }
  void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* mask, const Tensor& out,
                          const Tensor& lse, const Tensor& dout, const AttentionParams& p, Tensor& dq, Tensor& dk,
                          Tensor& dv) override {
    cuda_detail::attention_backward(device_, q, k, v, mask, out, lse, dout, p, dq, dk, dv);
  }

  void gather_rows(const Tensor& src, const Tensor& indices, Tensor& out) override {
    DeviceGuard guard(device_);
    const int64_t k = indices.numel();
    if (k == 0 || src.numel() == 0) return;
    const size_t row_bytes = src.nbytes() / static_cast<size_t>(src.size(0));
    auto launch = [&](auto unit) {
      using U = decltype(unit);
      const int64_t row = static_cast<int64_t>(row_bytes / sizeof(U));
      gather_rows_kernel<U><<<blocks_for(k * row), kThreads, 0, stream_>>>(
          static_cast<const U*>(src.raw_data()), dp<int64_t>(indices), static_cast<U*>(out.raw_data()), k, row);
    };
    // The widest unit that divides the row and both base addresses (views may start anywhere).
    const uintptr_t align = reinterpret_cast<uintptr_t>(src.raw_data()) | reinterpret_cast<uintptr_t>(out.raw_data()) | row_bytes;
    if (align % 8 == 0) launch(uint64_t{});
    else if (align % 4 == 0) launch(uint32_t{});
    else launch(uint8_t{});
    check_launch("gather_rows kernel launch", device_);
  }

  void argmax_rows(const Tensor& x, Tensor& out) override {
    DeviceGuard guard(device_);
    const int64_t rows = x.size(0), cols = x.size(1);
    floating(x.dtype(), "argmax_rows", [&]<class T>() {
      argmax_kernel<T><<<blocks_for(rows), kThreads, 0, stream_>>>(dp<T>(x), dp<int64_t>(out), rows, cols);
    });
    check_launch("argmax kernel launch", device_);
  }

  void accumulate_correct(const Tensor& scores, const Tensor& labels, Tensor& out) override {
    DeviceGuard guard(device_);
    const int64_t rows = scores.size(0), cols = scores.size(1);
    floating(scores.dtype(), "accumulate_correct", [&]<class T>() {
      correct_kernel<T><<<blocks_for(rows), kThreads, 0, stream_>>>(dp<T>(scores), dp<int32_t>(labels), dp<double>(out),
                                                                    rows, cols);
    });
    check_launch("accuracy kernel launch", device_);
  }

  void all_finite(const Tensor& x, Tensor& out) override {
    DeviceGuard guard(device_);
    fill(out, 1.0);
    const int64_t n = x.numel();
    floating(x.dtype(), "all_finite", [&]<class T>() {
      finite_kernel<T><<<blocks_for(n), kThreads, 0, stream_>>>(dp<T>(x), n, dp<float>(out));
    });
    check_launch("all_finite kernel launch", device_);
  }

  void adam_step(const AdamStep& h, Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, Tensor* vmax,
                 Tensor& nonfinite) override {
    DeviceGuard guard(device_);
    const int64_t n = param.numel();
    // A capturable step derives its scalars once per block: fewer, longer-running blocks then.
    const int blocks = h.device_step ? std::min(blocks_for(n), 1024) : blocks_for(n);
    adam_kernel<<<blocks, kThreads, 0, stream_>>>(h, dp<float>(param), dp<float>(grad), dp<float>(m), dp<float>(v),
                                                         vmax ? dp<float>(*vmax) : nullptr, n, dp<float>(nonfinite));
    check_launch("adam kernel launch", device_);
  }

  void sgd_step(const SgdStep& h, Tensor& param, const Tensor& grad, Tensor* buf, Tensor& nonfinite) override {
    DeviceGuard guard(device_);
    const int64_t n = param.numel();
    sgd_kernel<<<blocks_for(n), kThreads, 0, stream_>>>(h, dp<float>(param), dp<float>(grad), buf ? dp<float>(*buf) : nullptr, n,
                                                        dp<float>(nonfinite));
    check_launch("sgd kernel launch", device_);
  }

  void synchronize() override {
    DeviceGuard guard(device_);
    check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize", device_);
  }

 private:
  int device_;
  cudaStream_t stream_;
  cublasHandle_t cublas_;
};

}  // namespace

Backend& backend(int device) {
  static std::mutex mutex;
  static auto* backends = new std::vector<CudaBackend*>;  // never destroyed
  state(device);  // validates the index
  std::lock_guard<std::mutex> lock(mutex);
  if (backends->size() <= static_cast<size_t>(device)) backends->resize(static_cast<size_t>(device) + 1, nullptr);
  CudaBackend*& b = (*backends)[static_cast<size_t>(device)];
  if (!b) b = new CudaBackend(device);
  return *b;
}

}  // namespace axon::cuda_detail
