// CPU convolution and pooling kernels, channels last: the innermost loop runs over contiguous
// channels. im2col copies raw elements (any floating dtype); the backward kernels gather in the
// compute type (conv_math.h), so every input element is written once, in a fixed order.
#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "../conv_kernels.h"
#include "../conv_math.h"

namespace axon::cpu_detail {

namespace {

using kernels::Acc;
using kernels::ptr;

template <class F>
void floating(DType dtype, const char* kernel, F&& f) {
  kernels::dispatch_floating<bf16>(dtype, "cpu", kernel, std::forward<F>(f));
}

// Calls f(n, o (3 coords), flat output position) for every output position.
template <class F>
void for_each_output(const ConvGeometry& g, F&& f) {
  int64_t m = 0;
  for (int64_t n = 0; n < g.batch; ++n)
    for (int64_t o0 = 0; o0 < g.out[0]; ++o0)
      for (int64_t o1 = 0; o1 < g.out[1]; ++o1)
        for (int64_t o2 = 0; o2 < g.out[2]; ++o2, ++m) f(n, o0, o1, o2, m);
}

// The flat input position (n, i...) a tap reads, or −1 for padding.
inline int64_t input_position(const ConvGeometry& g, int64_t n, int64_t o0, int64_t o1, int64_t o2, int64_t j0,
                              int64_t j1, int64_t j2) {
  const int64_t i0 = kernels::conv_input_at(g, 0, o0, j0);
  if (i0 < 0) return -1;
  const int64_t i1 = kernels::conv_input_at(g, 1, o1, j1);
  if (i1 < 0) return -1;
  const int64_t i2 = kernels::conv_input_at(g, 2, o2, j2);
  if (i2 < 0) return -1;
  return ((n * g.in[0] + i0) * g.in[1] + i1) * g.in[2] + i2;
}

// Calls f(flat output position, tap index) for every (output position, tap) whose window reads
// input position (n, i0, i1, i2).
template <class F>
void for_each_reader(const ConvGeometry& g, int64_t n, int64_t i0, int64_t i1, int64_t i2, F&& f) {
  for (int64_t j0 = 0; j0 < g.kernel[0]; ++j0) {
    const int64_t o0 = kernels::conv_output_at(g, 0, i0, j0);
    if (o0 < 0) continue;
    for (int64_t j1 = 0; j1 < g.kernel[1]; ++j1) {
      const int64_t o1 = kernels::conv_output_at(g, 1, i1, j1);
      if (o1 < 0) continue;
      for (int64_t j2 = 0; j2 < g.kernel[2]; ++j2) {
        const int64_t o2 = kernels::conv_output_at(g, 2, i2, j2);
        if (o2 < 0) continue;
        f(((n * g.out[0] + o0) * g.out[1] + o1) * g.out[2] + o2, (j0 * g.kernel[1] + j1) * g.kernel[2] + j2);
      }
    }
  }
}

}  // namespace

void im2col(const Tensor& x, const ConvGeometry& g, int64_t group, Tensor& col) {
  const size_t es = dtype_size(x.dtype());
  const int64_t cg = g.channels / g.groups, taps = kernels::conv_taps(g), row = taps * cg;
  const char* px = static_cast<const char*>(x.raw_data()) + group * cg * es;
  char* pc = static_cast<char*>(col.raw_data());
  for_each_output(g, [&](int64_t n, int64_t o0, int64_t o1, int64_t o2, int64_t m) {
    char* dst = pc + m * row * es;
    for (int64_t j0 = 0; j0 < g.kernel[0]; ++j0)
      for (int64_t j1 = 0; j1 < g.kernel[1]; ++j1)
        for (int64_t j2 = 0; j2 < g.kernel[2]; ++j2, dst += cg * es) {
          const int64_t p = input_position(g, n, o0, o1, o2, j0, j1, j2);
          if (p < 0)
            std::memset(dst, 0, cg * es);  // zero bits are 0.0 in f32, f64 and bf16
          else
            std::memcpy(dst, px + p * g.channels * es, cg * es);
        }
  });
}

void col2im(const Tensor& col, const ConvGeometry& g, int64_t group, Tensor& dx) {
  floating(dx.dtype(), "col2im", [&]<class T>() {
    using A = Acc<T>;
    const int64_t cg = g.channels / g.groups, row = kernels::conv_taps(g) * cg;
    const T* pc = ptr<T>(col);
    T* pd = ptr<T>(dx) + group * cg;
    std::vector<A> acc(static_cast<size_t>(cg));
    int64_t p = 0;
    for (int64_t n = 0; n < g.batch; ++n)
      for (int64_t i0 = 0; i0 < g.in[0]; ++i0)
        for (int64_t i1 = 0; i1 < g.in[1]; ++i1)
          for (int64_t i2 = 0; i2 < g.in[2]; ++i2, ++p) {
            std::fill(acc.begin(), acc.end(), A(0));
            for_each_reader(g, n, i0, i1, i2, [&](int64_t m, int64_t j) {
              const T* src = pc + m * row + j * cg;
              for (int64_t c = 0; c < cg; ++c) acc[c] += static_cast<A>(src[c]);
            });
            T* dst = pd + p * g.channels;
            for (int64_t c = 0; c < cg; ++c) dst[c] = T(acc[c]);
          }
  });
}

void pool(PoolKind kind, const Tensor& x, const ConvGeometry& g, Tensor& out, Tensor* argmax) {
  floating(x.dtype(), "pool", [&]<class T>() {
    using A = Acc<T>;
    const int64_t C = g.channels;
    const T* px = ptr<T>(x);
    T* po = ptr<T>(out);
    int64_t* pa = argmax ? ptr<int64_t>(*argmax) : nullptr;
    const A inv = A(1) / static_cast<A>(kernels::conv_taps(g));
    std::vector<A> acc(static_cast<size_t>(C));
    std::vector<int64_t> arg(static_cast<size_t>(C));
    for_each_output(g, [&](int64_t n, int64_t o0, int64_t o1, int64_t o2, int64_t m) {
      if (kind == PoolKind::max) {
        std::fill(acc.begin(), acc.end(), -std::numeric_limits<A>::infinity());
        std::fill(arg.begin(), arg.end(), int64_t{-1});
      } else {
        std::fill(acc.begin(), acc.end(), A(0));
      }
      for (int64_t j0 = 0; j0 < g.kernel[0]; ++j0)
        for (int64_t j1 = 0; j1 < g.kernel[1]; ++j1)
          for (int64_t j2 = 0; j2 < g.kernel[2]; ++j2) {
            const int64_t p = input_position(g, n, o0, o1, o2, j0, j1, j2);
            if (p < 0) continue;
            const T* src = px + p * C;
            if (kind == PoolKind::max) {
              for (int64_t c = 0; c < C; ++c) {
                const A v = static_cast<A>(src[c]);
                // The first maximum wins; NaN propagates (as torch.max_pool).
                if (arg[c] < 0 || v > acc[c] || (v != v && acc[c] == acc[c])) {
                  acc[c] = v;
                  arg[c] = p * C + c;
                }
              }
            } else {
              for (int64_t c = 0; c < C; ++c) acc[c] += static_cast<A>(src[c]);
            }
          }
      T* dst = po + m * C;
      if (kind == PoolKind::max) {
        for (int64_t c = 0; c < C; ++c) dst[c] = T(acc[c]);
        std::memcpy(pa + m * C, arg.data(), static_cast<size_t>(C) * sizeof(int64_t));
      } else {
        for (int64_t c = 0; c < C; ++c) dst[c] = T(acc[c] * inv);
      }
    });
  });
}

void pool_backward(PoolKind kind, const Tensor& grad, const ConvGeometry& g, const Tensor* argmax, Tensor& dx) {
  floating(dx.dtype(), "pool_backward", [&]<class T>() {
    using A = Acc<T>;
    const int64_t C = g.channels;
    const T* pg = ptr<T>(grad);
    const int64_t* pa = argmax ? ptr<int64_t>(*argmax) : nullptr;
    T* pd = ptr<T>(dx);
    const A inv = A(1) / static_cast<A>(kernels::conv_taps(g));
    std::vector<A> acc(static_cast<size_t>(C));
    int64_t p = 0;
    for (int64_t n = 0; n < g.batch; ++n)
      for (int64_t i0 = 0; i0 < g.in[0]; ++i0)
        for (int64_t i1 = 0; i1 < g.in[1]; ++i1)
          for (int64_t i2 = 0; i2 < g.in[2]; ++i2, ++p) {
            std::fill(acc.begin(), acc.end(), A(0));
            for_each_reader(g, n, i0, i1, i2, [&](int64_t m, int64_t) {
              const T* src = pg + m * C;
              if (kind == PoolKind::max) {
                const int64_t* am = pa + m * C;
                for (int64_t c = 0; c < C; ++c)
                  if (am[c] == p * C + c) acc[c] += static_cast<A>(src[c]);
              } else {
                for (int64_t c = 0; c < C; ++c) acc[c] += static_cast<A>(src[c]);
              }
            });
            T* dst = pd + p * C;
            for (int64_t c = 0; c < C; ++c) dst[c] = T(kind == PoolKind::avg ? acc[c] * inv : acc[c]);
          }
  });
}

void batched_transpose(const Tensor& x, int64_t batch, int64_t rows, int64_t cols, Tensor& out) {
  const size_t es = dtype_size(x.dtype());
  const char* px = static_cast<const char*>(x.raw_data());
  char* po = static_cast<char*>(out.raw_data());
  // Blocks of 32×32 keep both sides in cache.
  constexpr int64_t B = 32;
  for (int64_t b = 0; b < batch; ++b) {
    const char* src = px + b * rows * cols * es;
    char* dst = po + b * rows * cols * es;
    for (int64_t r0 = 0; r0 < rows; r0 += B)
      for (int64_t c0 = 0; c0 < cols; c0 += B)
        for (int64_t r = r0; r < std::min(rows, r0 + B); ++r)
          for (int64_t c = c0; c < std::min(cols, c0 + B); ++c)
            std::memcpy(dst + (c * rows + r) * es, src + (r * cols + c) * es, es);
  }
}

}  // namespace axon::cpu_detail
