// The CPU kernels: plain loops over contiguous memory, GEMM through OpenBLAS.
//
// Each kernel is written once as a template over the element type T and instantiated for f32,
// f64 and bf16. Arithmetic happens in Acc<T>: float for f32 and bf16 (bf16 is a storage format;
// values are widened, computed on and rounded back once), double for f64.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <vector>

#include "axon/backend.h"
#include "blas.h"
#include "cpu/onednn_conv.h"
#include "cpu/parallel.h"
#include "../kernel_support.h"
#include "../activation_kernels.h"
#include "../attention_kernels.h"
#include "../conv_kernels.h"
#include "../layer_kernels.h"
#include "../norm_shape_kernels.h"

namespace axon {

namespace {

using kernels::Acc;

template <class T>
inline Acc<T> load(const T* p, int64_t i) {
  return static_cast<Acc<T>>(p[i]);
}
template <class T>
inline void store(T* p, int64_t i, Acc<T> v) {
  p[i] = T(v);
}

using kernels::broadcast_strides;
using kernels::ptr;

template <class F>
void dispatch_floating(DType dtype, const char* kernel, F&& f) {
  kernels::dispatch_floating<bf16>(dtype, "cpu", kernel, std::forward<F>(f));
}
template <class F>
void dispatch_any(DType dtype, F&& f) {
  kernels::dispatch_any<bf16>(dtype, std::forward<F>(f));
}

// Calls f(out_index, a_offset, b_offset) for every element of `out`, walking the inner dimension
// in a tight loop. Used by broadcasting kernels and by their gradient reductions.
template <class F>
void for_each_broadcast(const Shape& out, const std::vector<int64_t>& sa, const std::vector<int64_t>& sb, F f) {
  const int64_t total = shape_numel(out);
  if (total == 0) return;
  if (out.empty()) {
    f(0, 0, 0);
    return;
  }
  const size_t d = out.size();
  const int64_t inner = out[d - 1];
  const int64_t ia = sa[d - 1], ib = sb[d - 1];
  std::vector<int64_t> index(d - 1, 0);
  int64_t oa = 0, ob = 0;
  for (int64_t o = 0; o < total; o += inner) {
    for (int64_t j = 0; j < inner; ++j) f(o + j, oa + j * ia, ob + j * ib);
    for (int64_t k = static_cast<int64_t>(d) - 2; k >= 0; --k) {
      oa += sa[k];
      ob += sb[k];
      if (++index[k] < out[k]) break;
      oa -= sa[k] * out[k];
      ob -= sb[k] * out[k];
      index[k] = 0;
    }
  }
}

template <class T, class F>
void binary_loop(const Tensor& a, const Tensor& b, Tensor& out, F f) {
  const T* pa = ptr<T>(a);
  const T* pb = ptr<T>(b);
  T* o = ptr<T>(out);
  const int64_t n = out.numel();
  if (a.shape() == out.shape() && b.shape() == out.shape()) {
    cpu_detail::parallel_for(n, cpu_detail::kElementwiseGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) store(o, i, f(load(pa, i), load(pb, i)));
    });
  } else if (b.numel() == 1 && a.shape() == out.shape()) {
    const Acc<T> s = load(pb, 0);
    cpu_detail::parallel_for(n, cpu_detail::kElementwiseGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) store(o, i, f(load(pa, i), s));
    });
  } else if (a.numel() == 1 && b.shape() == out.shape()) {
    const Acc<T> s = load(pa, 0);
    cpu_detail::parallel_for(n, cpu_detail::kElementwiseGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) store(o, i, f(s, load(pb, i)));
    });
  } else {
    for_each_broadcast(out.shape(), broadcast_strides(a.shape(), out.shape()), broadcast_strides(b.shape(), out.shape()),
                       [&](int64_t i, int64_t ja, int64_t jb) { store(o, i, f(load(pa, ja), load(pb, jb))); });
  }
}

template <class T, class F>
void map_loop(const Tensor& x, Tensor& out, F f) {
  const T* px = ptr<T>(x);
  T* po = ptr<T>(out);
  cpu_detail::parallel_for(x.numel(), cpu_detail::kElementwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) store(po, i, f(load(px, i)));
  });
}

template <class T, class F>
void zip_loop(const Tensor& a, const Tensor& b, Tensor& out, F f) {
  const T* pa = ptr<T>(a);
  const T* pb = ptr<T>(b);
  T* po = ptr<T>(out);
  cpu_detail::parallel_for(a.numel(), cpu_detail::kElementwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) store(po, i, f(load(pa, i), load(pb, i)));
  });
}

template <class F>
void for_each_lane(const AxisSplit& s, F f) {
  for (int64_t o = 0; o < s.outer; ++o)
    for (int64_t i = 0; i < s.inner; ++i) f(o * s.n * s.inner + i);
}

int blas_int(int64_t v) {
  if (v > std::numeric_limits<int>::max()) throw std::length_error(fmt::format("BLAS dimension {} is too large", v));
  return static_cast<int>(v);
}

template <class T>
std::vector<float> widen(const Tensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  const T* p = ptr<T>(t);
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(p[i]);
  return out;
}

// Whether none of the n values (raw bits of type U) has all of `exponent`'s bits set.
template <class U>
bool no_all_ones_exponent(const void* data, int64_t n, U exponent) {
  const U* bits = static_cast<const U*>(data);
  U any = 0;
  for (int64_t i = 0; i < n; ++i) any |= static_cast<U>((bits[i] & exponent) == exponent);
  return any == 0;
}

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }

  void fill(Tensor& out, double value) override {
    dispatch_any(out.dtype(), [&]<class T>() {
      T v;
      if constexpr (std::is_same_v<T, bf16>) v = bf16(static_cast<float>(value));
      else v = static_cast<T>(value);
      std::fill_n(ptr<T>(out), out.numel(), v);
    });
  }

  void cast(Tensor& dst, const Tensor& src) override {
    const int64_t n = src.numel();
    dispatch_any(src.dtype(), [&]<class S>() {
      dispatch_any(dst.dtype(), [&]<class D>() {
        const S* ps = ptr<S>(src);
        D* pd = ptr<D>(dst);
        for (int64_t i = 0; i < n; ++i) {
          if constexpr (std::is_same_v<S, bf16> || std::is_same_v<D, bf16>)
            pd[i] = D(static_cast<float>(ps[i]));
          else
            pd[i] = static_cast<D>(ps[i]);
        }
      });
    });
  }

  void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) override {
    dispatch_floating(out.dtype(), "binary", [&]<class T>() {
      using A = Acc<T>;
      switch (op) {
        case BinaryOp::add: return binary_loop<T>(a, b, out, [](A x, A y) { return x + y; });
        case BinaryOp::sub: return binary_loop<T>(a, b, out, [](A x, A y) { return x - y; });
        case BinaryOp::mul: return binary_loop<T>(a, b, out, [](A x, A y) { return x * y; });
        case BinaryOp::div: return binary_loop<T>(a, b, out, [](A x, A y) { return x / y; });
        case BinaryOp::maximum:
          return binary_loop<T>(a, b, out, [](A x, A y) { return x != x || y != y ? x + y : (x > y ? x : y); });
        case BinaryOp::minimum:
          return binary_loop<T>(a, b, out, [](A x, A y) { return x != x || y != y ? x + y : (x < y ? x : y); });
      }
    });
  }

  void unary(UnaryOp op, const Tensor& x, double scalar, Tensor& out) override {
    dispatch_floating(out.dtype(), "unary", [&]<class T>() {
      using A = Acc<T>;
      const A s = static_cast<A>(scalar);
      switch (op) {
        case UnaryOp::neg: return map_loop<T>(x, out, [](A v) { return -v; });
        case UnaryOp::exp: return map_loop<T>(x, out, [](A v) { return std::exp(v); });
        case UnaryOp::log: return map_loop<T>(x, out, [](A v) { return std::log(v); });
        case UnaryOp::relu: return map_loop<T>(x, out, [](A v) { return v > A(0) ? v : A(0); });
        case UnaryOp::sigmoid: return map_loop<T>(x, out, [](A v) { return A(1) / (A(1) + std::exp(-v)); });
        case UnaryOp::tanh: return map_loop<T>(x, out, [](A v) { return std::tanh(v); });
        case UnaryOp::square: return map_loop<T>(x, out, [](A v) { return v * v; });
        case UnaryOp::add_scalar: return map_loop<T>(x, out, [s](A v) { return v + s; });
        case UnaryOp::mul_scalar: return map_loop<T>(x, out, [s](A v) { return v * s; });
        case UnaryOp::sqrt: return map_loop<T>(x, out, [](A v) { return std::sqrt(v); });
        case UnaryOp::abs: return map_loop<T>(x, out, [](A v) { return std::fabs(v); });
        case UnaryOp::sign:
          return map_loop<T>(x, out, [](A v) { return v > A(0) ? A(1) : (v < A(0) ? A(-1) : v); });
        case UnaryOp::max_scalar: return map_loop<T>(x, out, [s](A v) { return v < s ? s : v; });
        case UnaryOp::min_scalar: return map_loop<T>(x, out, [s](A v) { return v > s ? s : v; });
      }
    });
  }

  void unary_backward(UnaryOp op, const Tensor& g, const Tensor& saved, Tensor& out) override {
    dispatch_floating(out.dtype(), "unary_backward", [&]<class T>() {
      using A = Acc<T>;
      switch (op) {
        case UnaryOp::exp: return zip_loop<T>(g, saved, out, [](A gv, A y) { return gv * y; });
        case UnaryOp::log: return zip_loop<T>(g, saved, out, [](A gv, A x) { return gv / x; });
        case UnaryOp::relu: return zip_loop<T>(g, saved, out, [](A gv, A y) { return y > A(0) ? gv : A(0); });
        case UnaryOp::sigmoid: return zip_loop<T>(g, saved, out, [](A gv, A y) { return gv * y * (A(1) - y); });
        case UnaryOp::tanh: return zip_loop<T>(g, saved, out, [](A gv, A y) { return gv * (A(1) - y * y); });
        case UnaryOp::square: return zip_loop<T>(g, saved, out, [](A gv, A x) { return A(2) * x * gv; });
        default: throw std::logic_error("cpu kernel unary_backward: op has no saved-tensor gradient");
      }
    });
  }

  void reduce_to(const Tensor& g, Tensor& out) override {
    dispatch_floating(out.dtype(), "reduce_to", [&]<class T>() {
      // Accumulate in Acc<T> (a float buffer for bf16), then store once.
      std::vector<Acc<T>> acc(static_cast<size_t>(out.numel()), Acc<T>(0));
      const T* pg = ptr<T>(g);
      const std::vector<int64_t> so = broadcast_strides(out.shape(), g.shape());
      const std::vector<int64_t> unit = broadcast_strides(g.shape(), g.shape());
      for_each_broadcast(g.shape(), so, unit, [&](int64_t, int64_t jo, int64_t jg) { acc[jo] += load(pg, jg); });
      T* po = ptr<T>(out);
      for (size_t i = 0; i < acc.size(); ++i) store(po, static_cast<int64_t>(i), acc[i]);
    });
  }

  void sum_all(const Tensor& x, Tensor& out) override {
    dispatch_floating(x.dtype(), "sum_all", [&]<class T>() {
      double total = 0.0;  // double accumulator: sums of many floats lose digits otherwise
      const T* p = ptr<T>(x);
      const int64_t n = x.numel();
      for (int64_t i = 0; i < n; ++i) total += static_cast<double>(load(p, i));
      store(ptr<T>(out), 0, static_cast<Acc<T>>(total));
    });
  }

  void sum_axis(const Tensor& x, const AxisSplit& s, float beta, Tensor& out) override {
    dispatch_floating(x.dtype(), "sum_axis", [&]<class T>() {
      const T* px = ptr<T>(x);
      T* po = ptr<T>(out);
      std::vector<Acc<T>> row(static_cast<size_t>(s.inner));
      for (int64_t o = 0; o < s.outer; ++o) {
        for (int64_t i = 0; i < s.inner; ++i) row[i] = beta != 0.0f ? load(po, o * s.inner + i) : Acc<T>(0);
        for (int64_t k = 0; k < s.n; ++k)
          for (int64_t i = 0; i < s.inner; ++i) row[i] += load(px, (o * s.n + k) * s.inner + i);
        for (int64_t i = 0; i < s.inner; ++i) store(po, o * s.inner + i, row[i]);
      }
    });
  }

  void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const Tensor& a, const Tensor& b,
            float beta, Tensor& c) override {
    if (m == 0 || n == 0) return;
    const int M = blas_int(m), N = blas_int(n), K = blas_int(k);
    const int lda = trans_a ? M : K, ldb = trans_b ? K : N;
    const CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
    if (k == 0) {  // BLAS leaves C alone when k == 0 only for some implementations
      if (beta == 0.0f) fill(c, 0.0);
      return;
    }
    switch (c.dtype()) {
      case DType::f32:
        if (cpu_detail::onednn_sgemm(trans_a, trans_b, m, n, k, alpha, ptr<float>(a), lda, ptr<float>(b), ldb, beta,
                                     ptr<float>(c), N))
          return;
        blas::sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, ptr<float>(a), lda, ptr<float>(b), ldb, beta, ptr<float>(c), N);
        return;
      case DType::f64:
        blas::dgemm(CblasRowMajor, ta, tb, M, N, K, alpha, ptr<double>(a), lda, ptr<double>(b), ldb, beta,
                    ptr<double>(c), N);
        return;
      case DType::bf16: {
        // Widened to f32 for OpenBLAS's sgemm; the f32 result is rounded once.
        std::vector<float> fa = widen<bf16>(a), fb = widen<bf16>(b), fc = widen<bf16>(c);
        blas::sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, fa.data(), lda, fb.data(), ldb, beta, fc.data(), N);
        bf16* pc = ptr<bf16>(c);
        for (size_t i = 0; i < fc.size(); ++i) pc[i] = bf16(fc[i]);
        return;
      }
      default:
        throw std::invalid_argument(fmt::format("cpu kernel gemm: dtype {} is not supported", dtype_name(c.dtype())));
    }
  }

  void gemm_ld(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const Tensor& a, int64_t lda,
               const Tensor& b, int64_t ldb, float beta, Tensor& c, int64_t ldc) override {
    if (m == 0 || n == 0) return;
    const int M = blas_int(m), N = blas_int(n), K = blas_int(k), LDA = blas_int(lda), LDB = blas_int(ldb),
              LDC = blas_int(ldc);
    const CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
    if (k == 0) {
      if (beta == 0.0f)
        dispatch_floating(c.dtype(), "gemm_ld", [&]<class T>() {
          for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < n; ++j) ptr<T>(c)[i * ldc + j] = T(0.0f);
        });
      return;
    }
    switch (c.dtype()) {
      case DType::f32:
        if (cpu_detail::onednn_sgemm(trans_a, trans_b, m, n, k, alpha, ptr<float>(a), lda, ptr<float>(b), ldb, beta,
                                     ptr<float>(c), ldc))
          return;
        blas::sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, ptr<float>(a), LDA, ptr<float>(b), LDB, beta, ptr<float>(c),
                    LDC);
        return;
      case DType::f64:
        blas::dgemm(CblasRowMajor, ta, tb, M, N, K, alpha, ptr<double>(a), LDA, ptr<double>(b), LDB, beta,
                    ptr<double>(c), LDC);
        return;
      case DType::bf16: {
        // Widened to f32 (each operand's whole view, which may hold other matrices' rows between
        // these; they round-trip exactly); the f32 result is rounded once.
        std::vector<float> fa = widen<bf16>(a), fb = widen<bf16>(b), fc = widen<bf16>(c);
        blas::sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, fa.data(), LDA, fb.data(), LDB, beta, fc.data(), LDC);
        bf16* pc = ptr<bf16>(c);
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < n; ++j) pc[i * ldc + j] = bf16(fc[static_cast<size_t>(i * ldc + j)]);
        return;
      }
      default:
        throw std::invalid_argument(fmt::format("cpu kernel gemm_ld: dtype {} is not supported", dtype_name(c.dtype())));
    }
  }

  // Convolution and pooling: cpu/conv_kernels.cpp.
  bool has_conv(const ConvGeometry& g, int dims, int64_t cout, DType dtype) const override {
    return cpu_detail::onednn_conv_supported(g, dims, cout, dtype);
  }
  void conv_forward(const Tensor& x, const Tensor& kernel, const Tensor* bias, const ConvGeometry& g,
                    Tensor& out) override {
    cpu_detail::onednn_conv_forward(x, kernel, bias, g, out);
  }
  void conv_backward_data(const Tensor& grad, const Tensor& kernel, const ConvGeometry& g, Tensor& dx) override {
    cpu_detail::onednn_conv_backward_data(grad, kernel, g, dx);
  }
  void conv_backward_weights(const Tensor& x, const Tensor& grad, const ConvGeometry& g, float beta, Tensor& dw,
                             Tensor* db, float db_beta) override {
    cpu_detail::onednn_conv_backward_weights(x, grad, g, beta, dw, db, db_beta);
  }
  void im2col(const Tensor& x, const ConvGeometry& g, int64_t group, Tensor& col) override {
    cpu_detail::im2col(x, g, group, col);
  }
  void col2im(const Tensor& col, const ConvGeometry& g, int64_t group, Tensor& dx) override {
    cpu_detail::col2im(col, g, group, dx);
  }
  void pool(PoolKind kind, const Tensor& x, const ConvGeometry& g, Tensor& out, Tensor* argmax) override {
    cpu_detail::pool(kind, x, g, out, argmax);
  }
  void pool_backward(PoolKind kind, const Tensor& grad, const ConvGeometry& g, const Tensor* argmax,
                     Tensor& dx) override {
    cpu_detail::pool_backward(kind, grad, g, argmax, dx);
  }
  void batched_transpose(const Tensor& x, int64_t batch, int64_t rows, int64_t cols, Tensor& out) override {
    cpu_detail::batched_transpose(x, batch, rows, cols, out);
  }

  void transpose2d(const Tensor& x, Tensor& out) override {
    dispatch_floating(x.dtype(), "transpose2d", [&]<class T>() {
      const int64_t r = x.size(0), c = x.size(1);
      const T* px = ptr<T>(x);
      T* po = ptr<T>(out);
      for (int64_t i = 0; i < r; ++i)
        for (int64_t j = 0; j < c; ++j) po[j * r + i] = px[i * c + j];
    });
  }

  void softmax(const Tensor& x, const AxisSplit& s, bool log_space, Tensor& out) override {
    dispatch_floating(x.dtype(), "softmax", [&]<class T>() {
      using A = Acc<T>;
      const T* px = ptr<T>(x);
      T* po = ptr<T>(out);
      for_each_lane(s, [&](int64_t base) {
        A max_v = -std::numeric_limits<A>::infinity();
        for (int64_t k = 0; k < s.n; ++k) max_v = std::max(max_v, load(px, base + k * s.inner));
        double total = 0.0;
        for (int64_t k = 0; k < s.n; ++k) total += std::exp(static_cast<double>(load(px, base + k * s.inner) - max_v));
        if (log_space) {
          const A log_total = static_cast<A>(std::log(total));
          for (int64_t k = 0; k < s.n; ++k) store(po, base + k * s.inner, load(px, base + k * s.inner) - max_v - log_total);
        } else {
          const double inv = 1.0 / total;
          for (int64_t k = 0; k < s.n; ++k)
            store(po, base + k * s.inner,
                  static_cast<A>(std::exp(static_cast<double>(load(px, base + k * s.inner) - max_v)) * inv));
        }
      });
    });
  }

  void softmax_backward(const Tensor& y, const Tensor& g, const AxisSplit& s, bool log_space, Tensor& out) override {
    dispatch_floating(y.dtype(), "softmax_backward", [&]<class T>() {
      using A = Acc<T>;
      const T* py = ptr<T>(y);
      const T* pg = ptr<T>(g);
      T* po = ptr<T>(out);
      for_each_lane(s, [&](int64_t base) {
        double total = 0.0;  // softmax: Σ g⊙y; log-softmax: Σ g
        for (int64_t k = 0; k < s.n; ++k) {
          const int64_t j = base + k * s.inner;
          total += log_space ? static_cast<double>(load(pg, j)) : static_cast<double>(load(pg, j)) * load(py, j);
        }
        const A t = static_cast<A>(total);
        for (int64_t k = 0; k < s.n; ++k) {
          const int64_t j = base + k * s.inner;
          // softmax: dx = y ⊙ (g − Σ g⊙y); log-softmax: dx = g − exp(y) ⊙ Σ g
          store(po, j, log_space ? load(pg, j) - std::exp(load(py, j)) * t : load(py, j) * (load(pg, j) - t));
        }
      });
    });
  }

  // Activations: cpu/activation_kernels.cpp.
  void activation(ActivationOp op, const ActivationParams& p, const Tensor& x, Tensor& out) override {
    cpu_detail::activation(op, p, x, out);
  }
  void activation_backward(ActivationOp op, const ActivationParams& p, const Tensor& g, const Tensor& x,
                           Tensor& out) override {
    cpu_detail::activation_backward(op, p, g, x, out);
  }
  void log_sumexp(const Tensor& x, const AxisSplit& s, Tensor& out) override { cpu_detail::log_sumexp(x, s, out); }

  // Dropout and normalization: cpu/layer_kernels.cpp.
  void dropout(const Tensor& x, const DropoutParams& p, Tensor& out) override {
    cpu_detail::dropout(x, p, out);
  }
  void norm(const Tensor& x, const Tensor& gamma, const Tensor* beta, const AxisSplit& s, const NormParams& p, Tensor& y,
            Tensor& mean, Tensor& rstd) override {
    cpu_detail::norm(x, gamma, beta, s, p, y, mean, rstd);
  }
  void norm_backward(const Tensor& x, const Tensor& gamma, const Tensor& g, const Tensor& mean, const Tensor& rstd,
                     const AxisSplit& s, const NormParams& p, Tensor* dx, Tensor* dgamma, Tensor* dbeta) override {
    cpu_detail::norm_backward(x, gamma, g, mean, rstd, s, p, dx, dgamma, dbeta);
  }

  // Group-statistics normalization and shape kernels: cpu/norm_shape_kernels.cpp.
  void group_norm(const Tensor& x, const Tensor* gamma, const Tensor* beta, const GroupNormParams& p, Tensor& y,
                  Tensor& mean, Tensor& rstd, Tensor* running_mean, Tensor* running_var) override {
    cpu_detail::group_norm(x, gamma, beta, p, y, mean, rstd, running_mean, running_var);
  }
  void group_norm_backward(const Tensor& x, const Tensor* gamma, const Tensor& g, const Tensor& mean, const Tensor& rstd,
                           const GroupNormParams& p, Tensor* dx, Tensor* dgamma, Tensor* dbeta) override {
    cpu_detail::group_norm_backward(x, gamma, g, mean, rstd, p, dx, dgamma, dbeta);
  }
  void axis_copy(const Tensor& src, int64_t src_n, int64_t src_offset, Tensor& dst, int64_t dst_n, int64_t dst_offset,
                 int64_t outer, int64_t inner, int64_t count) override {
    cpu_detail::axis_copy(src, src_n, src_offset, dst, dst_n, dst_offset, outer, inner, count);
  }
  void permute(const Tensor& x, const std::vector<int64_t>& perm, Tensor& out) override { cpu_detail::permute(x, perm, out); }
  void resize(const Tensor& x, const ResizeParams& p, Tensor& out) override { cpu_detail::resize(x, p, out); }
  void resize_backward(const Tensor& g, const ResizeParams& p, Tensor& dx) override { cpu_detail::resize_backward(g, p, dx); }

  void cross_entropy(const Tensor& logits, const Tensor& labels, Tensor& probs, Tensor& loss) override {
    dispatch_floating(logits.dtype(), "cross_entropy", [&]<class T>() {
      using A = Acc<T>;
      const int64_t batch = logits.size(0), classes = logits.size(1);
      const T* x = ptr<T>(logits);
      const int32_t* lab = ptr<int32_t>(labels);
      T* p = ptr<T>(probs);
      double total = 0.0;
      std::vector<A> scratch;
      for (int64_t r = 0; r < batch; ++r) {
        const int32_t label = lab[r];
        const T* row = x + r * classes;
        T* prow = p + r * classes;
        A max_v = -std::numeric_limits<A>::infinity();
        for (int64_t c = 0; c < classes; ++c) max_v = std::max(max_v, load(row, c));
        double denom = 0.0;
        std::vector<A>& e = scratch;  // exponentials in the compute type, summed in double
        e.resize(static_cast<size_t>(classes));
        for (int64_t c = 0; c < classes; ++c) {
          e[c] = std::exp(load(row, c) - max_v);
          denom += static_cast<double>(e[c]);
        }
        const A inv = static_cast<A>(1.0 / denom);
        for (int64_t c = 0; c < classes; ++c) store(prow, c, e[c] * inv);
        total += (label < 0 || label >= classes) ? std::numeric_limits<double>::quiet_NaN()
                                                 : std::log(denom) - static_cast<double>(load(row, label) - max_v);
      }
      const double mean = total / static_cast<double>(batch);
      if (loss.dtype() == DType::f64) *ptr<double>(loss) = mean;
      else *ptr<float>(loss) = static_cast<float>(mean);
    });
  }

  void cross_entropy_backward(const Tensor& probs, const Tensor& labels, const Tensor& g, float beta,
                              Tensor& out) override {
    dispatch_floating(probs.dtype(), "cross_entropy_backward", [&]<class T>() {
      using A = Acc<T>;
      const int64_t batch = probs.size(0), classes = probs.size(1);
      const A grad = g.dtype() == DType::f64 ? static_cast<A>(*ptr<double>(g)) : static_cast<A>(*ptr<float>(g));
      const A scale = grad / static_cast<A>(batch);
      const T* pp = ptr<T>(probs);
      const int32_t* lab = ptr<int32_t>(labels);
      T* po = ptr<T>(out);
      for (int64_t r = 0; r < batch; ++r)
        for (int64_t c = 0; c < classes; ++c) {
          const int64_t i = r * classes + c;
          const A d = (load(pp, i) - (c == lab[r] ? A(1) : A(0))) * scale;
          store(po, i, beta == 0.0f ? d : load(po, i) + d);
        }
    });
  }

  void gather_rows(const Tensor& src, const Tensor& indices, Tensor& out) override {
    const size_t row_bytes = src.numel() == 0 ? 0 : src.nbytes() / static_cast<size_t>(src.size(0));
    const int64_t* idx = ptr<int64_t>(indices);
    const char* from = static_cast<const char*>(src.raw_data());
    char* to = static_cast<char*>(out.raw_data());
    for (int64_t k = 0; k < indices.numel(); ++k)
      std::memcpy(to + static_cast<size_t>(k) * row_bytes, from + static_cast<size_t>(idx[k]) * row_bytes, row_bytes);
  }

  void index_add_rows(const Tensor& src, const Tensor& indices, Tensor& out) override {
    cpu_detail::index_add_rows(src, indices, out);
  }
  void attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* mask, const AttentionParams& p,
                 Tensor& out, Tensor& lse) override {
    cpu_detail::attention(q, k, v, mask, p, out, lse);
  }
  void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* mask, const Tensor& out,
                          const Tensor& lse, const Tensor& dout, const AttentionParams& p, Tensor& dq, Tensor& dk,
                          Tensor& dv) override {
    cpu_detail::attention_backward(q, k, v, mask, out, lse, dout, p, dq, dk, dv);
  }

  void argmax_rows(const Tensor& x, Tensor& out) override {
    dispatch_floating(x.dtype(), "argmax_rows", [&]<class T>() {
      const int64_t rows = x.size(0), cols = x.size(1);
      const T* p = ptr<T>(x);
      int64_t* o = ptr<int64_t>(out);
      for (int64_t r = 0; r < rows; ++r) {
        int64_t best = 0;
        for (int64_t c = 1; c < cols; ++c)
          if (load(p, r * cols + c) > load(p, r * cols + best)) best = c;
        o[r] = best;
      }
    });
  }

  void accumulate_correct(const Tensor& scores, const Tensor& labels, Tensor& out) override {
    Tensor predicted = Tensor::empty({scores.size(0)}, {DType::i64, Device::cpu()});
    argmax_rows(scores, predicted);
    const int64_t* p = ptr<int64_t>(predicted);
    const int32_t* lab = ptr<int32_t>(labels);
    int64_t correct = 0;
    for (int64_t r = 0; r < predicted.numel(); ++r) correct += p[r] == lab[r];
    *ptr<double>(out) += static_cast<double>(correct);
  }

  void all_finite(const Tensor& x, Tensor& out) override {
    // Exponent bits all ones means inf or NaN. Tested on the bits with an OR over the buffer, which
    // the compiler vectorizes (a loop of std::isfinite does not): this runs over every parameter
    // and gradient at each check.
    const int64_t n = x.numel();
    bool finite = true;
    switch (x.dtype()) {
      case DType::f32: finite = no_all_ones_exponent<uint32_t>(x.raw_data(), n, 0x7f800000u); break;
      case DType::f64: finite = no_all_ones_exponent<uint64_t>(x.raw_data(), n, 0x7ff0000000000000ull); break;
      case DType::bf16: finite = no_all_ones_exponent<uint16_t>(x.raw_data(), n, 0x7f80u); break;
      default: dispatch_floating(x.dtype(), "all_finite", []<class T>() {});
    }
    *ptr<float>(out) = finite ? 1.0f : 0.0f;
  }

  void adam_step(const AdamStep& step, Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, Tensor* vmax,
                 Tensor& nonfinite) override {
    // A local copy: the compiler cannot prove that stores to the buffers leave a referenced
    // AdamStep alone, and would reload every scalar per element instead of vectorizing.
    AdamStep resolved = step;
    kernels::adam_scalars_from_step(resolved);  // a capturable step's count lives beside the parameters
    const AdamStep h = resolved;
    float* __restrict pp = ptr<float>(param);
    const float* __restrict pg = ptr<float>(grad);
    float* __restrict pm = ptr<float>(m);
    float* __restrict pv = ptr<float>(v);
    const int64_t n = param.numel();
    uint32_t bad = 0;
    // Two loops, so the compiler vectorizes the common one without the amsgrad branch.
    if (vmax) {
      float* __restrict px = ptr<float>(*vmax);
      for (int64_t i = 0; i < n; ++i) {
        kernels::adam_element(h, pp[i], pg[i], pm[i], pv[i], &px[i]);
        bad |= kernels::not_finite_bits(pp[i]);
      }
    } else {
      for (int64_t i = 0; i < n; ++i) {
        kernels::adam_element(h, pp[i], pg[i], pm[i], pv[i], nullptr);
        bad |= kernels::not_finite_bits(pp[i]);
      }
    }
    if (bad) *ptr<float>(nonfinite) = 1.0f;
  }

  void sgd_step(const SgdStep& step, Tensor& param, const Tensor& grad, Tensor* buf, Tensor& nonfinite) override {
    const SgdStep h = step;  // local, as in adam_step
    float* __restrict pp = ptr<float>(param);
    const float* __restrict pg = ptr<float>(grad);
    const int64_t n = param.numel();
    uint32_t bad = 0;
    if (buf) {
      float* __restrict pb = ptr<float>(*buf);
      for (int64_t i = 0; i < n; ++i) {
        kernels::sgd_element(h, pp[i], pg[i], &pb[i]);
        bad |= kernels::not_finite_bits(pp[i]);
      }
    } else {
      for (int64_t i = 0; i < n; ++i) {
        kernels::sgd_element(h, pp[i], pg[i], nullptr);
        bad |= kernels::not_finite_bits(pp[i]);
      }
    }
    if (bad) *ptr<float>(nonfinite) = 1.0f;
  }

  void synchronize() override {}
};

}  // namespace

Backend& cpu_backend() {
  static CpuBackend* backend = new CpuBackend;  // never destroyed, like the block cache
  return *backend;
}

}  // namespace axon
