// CPU activation kernels: one loop per (dtype, activation), the formula from activation_math.h.
#include <algorithm>
#include <cmath>
#include <limits>

#include "../activation_kernels.h"
#include "../activation_math.h"
#include "parallel.h"

namespace axon::cpu_detail {

namespace {

using kernels::Acc;
using kernels::ptr;

template <class F>
void floating(DType dtype, const char* kernel, F&& f) {
  kernels::dispatch_floating<bf16>(dtype, "cpu", kernel, std::forward<F>(f));
}

// The loops themselves, one function per (activation, dtype), each with an AVX2 clone.
template <ActivationOp Op, class T, class A>
AXON_SIMD_CLONES void forward_loop(const T* x, T* out, int64_t n, A a, A b) {
  for (int64_t i = 0; i < n; ++i) out[i] = T(kernels::act::forward<Op>(static_cast<A>(x[i]), a, b));
}

template <ActivationOp Op, class T, class A>
AXON_SIMD_CLONES void backward_loop(const T* g, const T* x, T* out, int64_t n, A a, A b) {
  for (int64_t i = 0; i < n; ++i)
    out[i] = T(static_cast<A>(g[i]) * kernels::act::derivative<Op>(static_cast<A>(x[i]), a, b));
}

}  // namespace

void activation(ActivationOp op, const ActivationParams& p, const Tensor& x, Tensor& out) {
  floating(x.dtype(), "activation", [&]<class T>() {
    using A = Acc<T>;
    const A a = static_cast<A>(p.alpha), b = static_cast<A>(p.beta);
    const T* px = ptr<T>(x);
    T* po = ptr<T>(out);
    kernels::act::dispatch(op, [&]<ActivationOp Op>() {
      parallel_for(x.numel(), kElementwiseGrain,
                   [&](int64_t begin, int64_t end) { forward_loop<Op, T, A>(px + begin, po + begin, end - begin, a, b); });
    });
  });
}

void activation_backward(ActivationOp op, const ActivationParams& p, const Tensor& g, const Tensor& x, Tensor& out) {
  floating(x.dtype(), "activation_backward", [&]<class T>() {
    using A = Acc<T>;
    const A a = static_cast<A>(p.alpha), b = static_cast<A>(p.beta);
    const T* pg = ptr<T>(g);
    const T* px = ptr<T>(x);
    T* po = ptr<T>(out);
    kernels::act::dispatch(op, [&]<ActivationOp Op>() {
      parallel_for(x.numel(), kElementwiseGrain, [&](int64_t begin, int64_t end) {
        backward_loop<Op, T, A>(pg + begin, px + begin, po + begin, end - begin, a, b);
      });
    });
  });
}

void log_sumexp(const Tensor& x, const AxisSplit& s, Tensor& out) {
  floating(x.dtype(), "log_sumexp", [&]<class T>() {
    using A = Acc<T>;
    const T* px = ptr<T>(x);
    T* po = ptr<T>(out);
    for (int64_t o = 0; o < s.outer; ++o)
      for (int64_t i = 0; i < s.inner; ++i) {
        const int64_t base = o * s.n * s.inner + i;
        A max_v = -std::numeric_limits<A>::infinity();
        for (int64_t k = 0; k < s.n; ++k) max_v = std::max(max_v, static_cast<A>(px[base + k * s.inner]));
        A result = max_v;
        if (std::isfinite(max_v)) {
          double total = 0.0;  // summed in double, as softmax
          for (int64_t k = 0; k < s.n; ++k)
            total += std::exp(static_cast<double>(static_cast<A>(px[base + k * s.inner]) - max_v));
          result = max_v + static_cast<A>(std::log(total));
        }
        po[o * s.inner + i] = T(result);
      }
  });
}

}  // namespace axon::cpu_detail
