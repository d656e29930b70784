// CPU convolution and pooling kernels, channels last: the innermost loop runs over contiguous
// channels. im2col copies raw elements (any floating dtype); the backward kernels scatter-add in
// the compute type, sequentially, so results are deterministic.
#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "../conv_kernels.h"
#include "../conv_math.h"
#include "parallel.h"

namespace axon::cpu_detail {

namespace {

using kernels::Acc;
using kernels::ptr;

template <class F>
void floating(DType dtype, const char* kernel, F&& f) {
  kernels::dispatch_floating<bf16>(dtype, "cpu", kernel, std::forward<F>(f));
}

// The input coordinate of every (output position, tap) along each dim, or −1 for padding:
// computed once per call, so the loops below only look them up.
struct TapTable {
  std::vector<int64_t> at[3];
  explicit TapTable(const ConvGeometry& g) {
    for (int d = 0; d < 3; ++d) {
      at[d].resize(static_cast<size_t>(g.out[d] * g.kernel[d]));
      for (int64_t o = 0; o < g.out[d]; ++o)
        for (int64_t j = 0; j < g.kernel[d]; ++j) at[d][o * g.kernel[d] + j] = kernels::conv_input_at(g, d, o, j);
    }
  }
};

// Calls f(m, j, p) for every output position m (flat over batch and out dims) and tap j (flat
// over the kernel dims), in order, with p the flat input position (n, i...) it reads or −1.
// Calls begin(m) before the taps of each output position.
template <class Begin, class F>
void for_each_window(const ConvGeometry& g, Begin&& begin, F&& f) {
  const TapTable t(g);
  int64_t m = 0;
  for (int64_t n = 0; n < g.batch; ++n)
    for (int64_t o0 = 0; o0 < g.out[0]; ++o0)
      for (int64_t o1 = 0; o1 < g.out[1]; ++o1)
        for (int64_t o2 = 0; o2 < g.out[2]; ++o2, ++m) {
          begin(m);
          int64_t j = 0;
          for (int64_t j0 = 0; j0 < g.kernel[0]; ++j0) {
            const int64_t i0 = t.at[0][o0 * g.kernel[0] + j0];
            for (int64_t j1 = 0; j1 < g.kernel[1]; ++j1) {
              const int64_t i1 = t.at[1][o1 * g.kernel[1] + j1];
              for (int64_t j2 = 0; j2 < g.kernel[2]; ++j2, ++j) {
                const int64_t i2 = t.at[2][o2 * g.kernel[2] + j2];
                const bool inside = i0 >= 0 && i1 >= 0 && i2 >= 0;
                f(m, j, inside ? ((n * g.in[0] + i0) * g.in[1] + i1) * g.in[2] + i2 : int64_t{-1});
              }
            }
          }
        }
}

// Copies raw elements of `size` bytes (2, 4 or 8), so im2col needs no dtype dispatch.
template <class F>
void by_element_size(size_t size, F&& f) {
  switch (size) {
    case 2: return f.template operator()<uint16_t>();
    case 4: return f.template operator()<uint32_t>();
    default: return f.template operator()<uint64_t>();
  }
}

// One window element (tap j) into the running maxima of every channel. The first maximum wins;
// NaN propagates (as torch.max_pool). Branch-free over non-aliasing pointers and 4-byte lanes
// (f32 values, i32 taps), so it vectorizes.
template <class T, class A>
__attribute__((noinline)) void max_step(const T* __restrict src, A* __restrict acc, int32_t* __restrict arg, int32_t j, int64_t C) {
  for (int64_t c = 0; c < C; ++c) {
    const A v = static_cast<A>(src[c]);
    const A a = acc[c];
    const bool take = (v > a) | ((v != v) & (a == a));
    acc[c] = take ? v : a;
    arg[c] = take ? j : arg[c];
  }
}

// Adds each channel's output gradient to dst where tap j was the window's maximum.
template <class T, class A>
__attribute__((noinline)) void max_grad_step(const T* __restrict grad, const int32_t* __restrict arg, A* __restrict dst, int32_t j, int64_t C) {
  for (int64_t c = 0; c < C; ++c) {
    const A gc = static_cast<A>(grad[c]);  // loaded unconditionally, so the select vectorizes
    dst[c] += arg[c] == j ? gc : A(0);
  }
}

// dst = the output gradient where tap j was the window's maximum, else 0 (disjoint windows).
template <class T>
__attribute__((noinline)) void max_grad_write(const T* __restrict grad, const int32_t* __restrict arg, T* __restrict dst, int32_t j, int64_t C) {
  for (int64_t c = 0; c < C; ++c) {
    // Loaded unconditionally, so the select vectorizes; + 0 turns −0 into +0 as the general path's
    // 0 + g does (the same bits).
    const T gc = grad[c] + T(0);
    dst[c] = arg[c] == j ? gc : T(0);
  }
}

// dst += src over n elements.
template <class T, class A>
__attribute__((noinline)) void add_to(const T* __restrict src, A* __restrict dst, int64_t n) {
  for (int64_t c = 0; c < n; ++c) dst[c] += static_cast<A>(src[c]);
}

// Whether every window lies inside the input (no padding, no input dilation): then the taps
// need no table and no bounds checks (the cnn's 2×2, stride-2 max pooling).
bool windows_inside(const ConvGeometry& g) {
  for (int d = 0; d < 3; ++d)
    if (g.pad_lo[d] != 0 || g.input_dilation[d] != 1 ||
        (g.out[d] - 1) * g.stride[d] + (g.kernel[d] - 1) * g.kernel_dilation[d] >= g.in[d])
      return false;
  return true;
}

// Whether no two windows share an input element (stride ≥ the dilated kernel along every dim),
// and whether together they cover every element.
bool windows_disjoint(const ConvGeometry& g, bool* cover) {
  *cover = true;
  for (int d = 0; d < 3; ++d) {
    const int64_t k_eff = (g.kernel[d] - 1) * g.kernel_dilation[d] + 1;
    if (g.stride[d] < k_eff) return false;
    *cover = *cover && g.kernel_dilation[d] == 1 && g.stride[d] == g.kernel[d] && g.out[d] * g.stride[d] == g.in[d];
  }
  return true;
}

// Calls f(n, m, j, p) for each window of samples [n0, n1) (m flat over batch and out dims) and
// each of its taps j, p the flat input position: windows_inside geometries only.
template <class F>
void for_each_inside_window(const ConvGeometry& g, int64_t n0, int64_t n1, F&& f) {
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t o0 = 0; o0 < g.out[0]; ++o0)
      for (int64_t o1 = 0; o1 < g.out[1]; ++o1)
        for (int64_t o2 = 0; o2 < g.out[2]; ++o2) {
          const int64_t m = ((n * g.out[0] + o0) * g.out[1] + o1) * g.out[2] + o2;
          int32_t j = 0;
          for (int64_t j0 = 0; j0 < g.kernel[0]; ++j0) {
            const int64_t i0 = o0 * g.stride[0] + j0 * g.kernel_dilation[0];
            for (int64_t j1 = 0; j1 < g.kernel[1]; ++j1) {
              const int64_t i1 = o1 * g.stride[1] + j1 * g.kernel_dilation[1];
              for (int64_t j2 = 0; j2 < g.kernel[2]; ++j2, ++j) {
                const int64_t i2 = o2 * g.stride[2] + j2 * g.kernel_dilation[2];
                f(m, j, ((n * g.in[0] + i0) * g.in[1] + i1) * g.in[2] + i2);
              }
            }
          }
        }
}

// Samples per thread-pool range: about kElementwiseGrain input elements.
int64_t sample_grain(const ConvGeometry& g) {
  return std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, kernels::conv_in_positions(g) * g.channels));
}

// Max pooling of windows_inside geometries, straight into out and argmax, samples over the
// thread pool: the same comparisons in the same order as the general path, so the same bits.
template <class T>
void max_pool_inside(const T* px, const ConvGeometry& g, T* po, int32_t* pa) {
  const int64_t C = g.channels;
  parallel_for(g.batch, sample_grain(g), [&](int64_t n0, int64_t n1) {
    for_each_inside_window(g, n0, n1, [&](int64_t m, int32_t j, int64_t p) {
      const T* src = px + p * C;
      if (j == 0) {  // the window's first element starts it, even if −inf
        std::copy(src, src + C, po + m * C);
        std::fill(pa + m * C, pa + m * C + C, int32_t{0});
      } else {
        max_step(src, po + m * C, pa + m * C, j, C);
      }
    });
  });
}

// Its backward when windows are disjoint: each input element gets its window's gradient or 0,
// written once (no zeroing pass when the windows cover the input).
template <class T>
void max_pool_backward_disjoint(const T* pg, const int32_t* pa, const ConvGeometry& g, bool cover, T* pd) {
  const int64_t C = g.channels, per_sample = kernels::conv_in_positions(g) * C;
  parallel_for(g.batch, sample_grain(g), [&](int64_t n0, int64_t n1) {
    if (!cover) std::fill(pd + n0 * per_sample, pd + n1 * per_sample, T(0));
    for_each_inside_window(g, n0, n1,
                           [&](int64_t m, int32_t j, int64_t p) { max_grad_write(pg + m * C, pa + m * C, pd + p * C, j, C); });
  });
}

}  // namespace

void im2col(const Tensor& x, const ConvGeometry& g, int64_t group, Tensor& col) {
  by_element_size(dtype_size(x.dtype()), [&]<class E>() {
    const int64_t cg = g.channels / g.groups, row = kernels::conv_taps(g) * cg, C = g.channels;
    const E* px = static_cast<const E*>(x.raw_data()) + group * cg;
    E* pc = static_cast<E*>(col.raw_data());
    const TapTable t(g);
    const int64_t k2 = g.kernel[2];
    // Along the last spatial dim, without dilations, a window row reads k2·C consecutive input
    // elements: with one group (cg = C) and the row inside the input, one copy of k2·C elements.
    const bool rows = g.groups == 1 && g.input_dilation[2] == 1 && g.kernel_dilation[2] == 1;
    int64_t m = 0;
    for (int64_t n = 0; n < g.batch; ++n)
      for (int64_t o0 = 0; o0 < g.out[0]; ++o0)
        for (int64_t o1 = 0; o1 < g.out[1]; ++o1)
          for (int64_t o2 = 0; o2 < g.out[2]; ++o2, ++m) {
            E* dst = pc + m * row;
            for (int64_t j0 = 0; j0 < g.kernel[0]; ++j0) {
              const int64_t i0 = t.at[0][o0 * g.kernel[0] + j0];
              for (int64_t j1 = 0; j1 < g.kernel[1]; ++j1, dst += k2 * cg) {
                const int64_t i1 = t.at[1][o1 * g.kernel[1] + j1];
                if (i0 < 0 || i1 < 0) {
                  std::fill(dst, dst + k2 * cg, E(0));  // zero bits are 0.0 in f32, f64 and bf16
                  continue;
                }
                const int64_t line = (n * g.in[0] + i0) * g.in[1] + i1;
                const int64_t first = t.at[2][o2 * k2], last = t.at[2][o2 * k2 + k2 - 1];
                if (rows && first >= 0 && last >= 0) {
                  std::copy(px + (line * g.in[2] + first) * C, px + (line * g.in[2] + first) * C + k2 * cg, dst);
                  continue;
                }
                for (int64_t j2 = 0; j2 < k2; ++j2) {
                  const int64_t i2 = t.at[2][o2 * k2 + j2];
                  E* d = dst + j2 * cg;
                  if (i2 < 0)
                    std::fill(d, d + cg, E(0));
                  else
                    std::copy(px + (line * g.in[2] + i2) * C, px + (line * g.in[2] + i2) * C + cg, d);
                }
              }
            }
          }
  });
}

// Scatter form (each col entry added to the input element it came from), summed in the compute
// type in a buffer of the group's channels, then written once: sequential, so deterministic.
void col2im(const Tensor& col, const ConvGeometry& g, int64_t group, Tensor& dx) {
  floating(dx.dtype(), "col2im", [&]<class T>() {
    using A = Acc<T>;
    const int64_t cg = g.channels / g.groups, row = kernels::conv_taps(g) * cg, C = g.channels;
    const int64_t positions = g.batch * kernels::conv_in_positions(g);
    const T* pc = ptr<T>(col);
    if constexpr (std::is_same_v<T, A>) {
      if (g.groups == 1) {  // f32 and f64 with one group: straight into dx
        A* acc = ptr<T>(dx);
        std::memset(acc, 0, static_cast<size_t>(dx.numel()) * sizeof(A));
        for_each_window(g, [](int64_t) {}, [&](int64_t m, int64_t j, int64_t p) {
          if (p >= 0) add_to(pc + m * row + j * cg, acc + p * cg, cg);
        });
        return;
      }
    }
    std::vector<A> acc(static_cast<size_t>(positions * cg), A(0));
    for_each_window(g, [](int64_t) {}, [&](int64_t m, int64_t j, int64_t p) {
      if (p >= 0) add_to(pc + m * row + j * cg, acc.data() + p * cg, cg);
    });
    T* pd = ptr<T>(dx) + group * cg;
    for (int64_t p = 0; p < positions; ++p)
      for (int64_t c = 0; c < cg; ++c) pd[p * C + c] = T(acc[static_cast<size_t>(p * cg + c)]);
  });
}

void pool(PoolKind kind, const Tensor& x, const ConvGeometry& g, Tensor& out, Tensor* argmax) {
  floating(x.dtype(), "pool", [&]<class T>() {
    using A = Acc<T>;
    const int64_t C = g.channels;
    const T* px = ptr<T>(x);
    T* po = ptr<T>(out);
    int32_t* pa = argmax ? ptr<int32_t>(*argmax) : nullptr;
    if constexpr (std::is_same_v<T, A>) {
      if (kind == PoolKind::max && windows_inside(g)) return max_pool_inside(px, g, po, pa);
    }
    const A inv = A(1) / static_cast<A>(kernels::conv_taps(g));
    std::vector<A> acc(static_cast<size_t>(C));
    std::vector<int32_t> arg(static_cast<size_t>(C));
    bool first = true;
    auto finish = [&](int64_t m) {
      T* dst = po + m * C;
      if (kind == PoolKind::max) {
        for (int64_t c = 0; c < C; ++c) dst[c] = T(acc[c]);
        std::memcpy(pa + m * C, arg.data(), static_cast<size_t>(C) * sizeof(int32_t));
      } else {
        for (int64_t c = 0; c < C; ++c) dst[c] = T(acc[c] * inv);
      }
    };
    int64_t current = -1;
    for_each_window(
        g,
        [&](int64_t m) {
          if (current >= 0) finish(current);
          current = m;
          first = true;
          std::fill(acc.begin(), acc.end(), kind == PoolKind::max ? -std::numeric_limits<A>::infinity() : A(0));
          std::fill(arg.begin(), arg.end(), int32_t{-1});
        },
        [&](int64_t, int64_t j, int64_t p) {
          if (p < 0) return;
          const T* src = px + p * C;
          const int32_t tap = static_cast<int32_t>(j);
          if (kind == PoolKind::avg) {
            for (int64_t c = 0; c < C; ++c) acc[c] += static_cast<A>(src[c]);
          } else if (first) {  // the window's first element starts it, even if −inf
            for (int64_t c = 0; c < C; ++c) {
              acc[c] = static_cast<A>(src[c]);
              arg[c] = tap;
            }
          } else {
            max_step(src, acc.data(), arg.data(), tap, C);
          }
          first = false;
        });
    if (current >= 0) finish(current);
  });
}

// Scatter form (each output gradient added to the inputs its window read: the maximum, or every
// element with weight 1/window), summed in the compute type, then written once.
void pool_backward(PoolKind kind, const Tensor& grad, const ConvGeometry& g, const Tensor* argmax, Tensor& dx) {
  floating(dx.dtype(), "pool_backward", [&]<class T>() {
    using A = Acc<T>;
    const int64_t C = g.channels;
    const T* pg = ptr<T>(grad);
    bool cover = false;
    if constexpr (std::is_same_v<T, A>) {
      if (kind == PoolKind::max && windows_inside(g) && windows_disjoint(g, &cover))
        return max_pool_backward_disjoint(pg, ptr<int32_t>(*argmax), g, cover, ptr<T>(dx));
    }
    // f32 and f64 sum straight into dx; bf16 into an f32 buffer, rounded once at the end.
    std::vector<A> buffer;
    A* acc;
    if constexpr (std::is_same_v<T, A>) {
      acc = ptr<T>(dx);
      std::memset(acc, 0, static_cast<size_t>(dx.numel()) * sizeof(A));
    } else {
      buffer.assign(static_cast<size_t>(dx.numel()), A(0));
      acc = buffer.data();
    }
    if (kind == PoolKind::max) {
      const int32_t* pa = ptr<int32_t>(*argmax);
      for_each_window(g, [](int64_t) {}, [&](int64_t m, int64_t j, int64_t p) {
        if (p < 0) return;
        const T* src = pg + m * C;
        const int32_t* am = pa + m * C;
        max_grad_step(src, am, acc + p * C, static_cast<int32_t>(j), C);
      });
    } else {
      const A inv = A(1) / static_cast<A>(kernels::conv_taps(g));
      for_each_window(g, [](int64_t) {}, [&](int64_t m, int64_t, int64_t p) {
        if (p < 0) return;
        const T* src = pg + m * C;
        A* dst = acc + p * C;
        for (int64_t c = 0; c < C; ++c) dst[c] += static_cast<A>(src[c]) * inv;
      });
    }
    if constexpr (!std::is_same_v<T, A>) {
      T* pd = ptr<T>(dx);
      for (size_t i = 0; i < buffer.size(); ++i) pd[i] = T(buffer[i]);
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
