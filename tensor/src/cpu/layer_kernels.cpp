// CPU dropout and normalization kernels.
#include <cmath>
#include <vector>

#include "../layer_kernels.h"
#include "../layer_math.h"

namespace axon::cpu_detail {

namespace {

using kernels::Acc;
using kernels::ptr;

template <class F>
void floating(DType dtype, const char* kernel, F&& f) {
  kernels::dispatch_floating<bf16>(dtype, "cpu", kernel, std::forward<F>(f));
}

}  // namespace

void dropout(const Tensor& x, const DropoutParams& p, Tensor& out) {
  floating(x.dtype(), "dropout", [&]<class T>() {
    using A = Acc<T>;
    const A scale = static_cast<A>(p.keep_scale), offset = static_cast<A>(p.keep_offset), drop = static_cast<A>(p.drop_value);
    const T* px = ptr<T>(x);
    T* po = ptr<T>(out);
    const int64_t n = x.numel();
    for (int64_t i = 0; i < n; ++i)
      po[i] = T(kernels::dropout_element<A>(p, i, static_cast<A>(px[i]), scale, offset, drop));
  });
}

// Statistics per lane in double, results in the compute type A.
void norm(const Tensor& x, const Tensor& gamma, const Tensor* beta, const AxisSplit& s, const NormParams& p, Tensor& y,
          Tensor& mean, Tensor& rstd) {
  floating(x.dtype(), "norm", [&]<class T>() {
    using A = Acc<T>;
    const T* px = ptr<T>(x);
    const T* pg = ptr<T>(gamma);
    const T* pb = beta ? ptr<T>(*beta) : nullptr;
    T* py = ptr<T>(y);
    A* pm = ptr<A>(mean);
    A* pr = ptr<A>(rstd);
    const A shift = static_cast<A>(p.shift);
    for (int64_t o = 0; o < s.outer; ++o)
      for (int64_t i = 0; i < s.inner; ++i) {
        const int64_t base = o * s.n * s.inner + i, lane = o * s.inner + i;
        double mu = 0.0, var = 0.0;
        if (!p.rms) {
          for (int64_t k = 0; k < s.n; ++k) mu += static_cast<double>(static_cast<A>(px[base + k * s.inner]));
          mu /= static_cast<double>(s.n);
        }
        for (int64_t k = 0; k < s.n; ++k) {
          const double d = static_cast<double>(static_cast<A>(px[base + k * s.inner])) - mu;
          var += d * d;
        }
        var /= static_cast<double>(s.n);
        const A m = static_cast<A>(mu), r = static_cast<A>(1.0 / std::sqrt(var + p.eps));
        pm[lane] = m;
        pr[lane] = r;
        for (int64_t k = 0; k < s.n; ++k) {
          const int64_t j = base + k * s.inner;
          const A w = static_cast<A>(pg[k]) + shift;
          A v = (static_cast<A>(px[j]) - m) * r * w;
          if (pb) v += static_cast<A>(pb[k]);
          py[j] = T(v);
        }
      }
  });
}

void norm_backward(const Tensor& x, const Tensor& gamma, const Tensor& g, const Tensor& mean, const Tensor& rstd,
                   const AxisSplit& s, const NormParams& p, Tensor* dx, Tensor* dgamma, Tensor* dbeta) {
  floating(x.dtype(), "norm_backward", [&]<class T>() {
    using A = Acc<T>;
    const T* px = ptr<T>(x);
    const T* pgamma = ptr<T>(gamma);
    const T* pg = ptr<T>(g);
    const A* pm = ptr<A>(mean);
    const A* pr = ptr<A>(rstd);
    const A shift = static_cast<A>(p.shift);
    std::vector<double> sum_gamma(dgamma ? static_cast<size_t>(s.n) : 0, 0.0), sum_beta(dbeta ? static_cast<size_t>(s.n) : 0, 0.0);
    for (int64_t o = 0; o < s.outer; ++o)
      for (int64_t i = 0; i < s.inner; ++i) {
        const int64_t base = o * s.n * s.inner + i, lane = o * s.inner + i;
        const A m = pm[lane], r = pr[lane];
        // Σ g·w and Σ g·w·x̂ over the lane (x̂ the normalized input, w the scale).
        double s1 = 0.0, s2 = 0.0;
        for (int64_t k = 0; k < s.n; ++k) {
          const int64_t j = base + k * s.inner;
          const A xhat = (static_cast<A>(px[j]) - m) * r, gv = static_cast<A>(pg[j]);
          const A gw = gv * (static_cast<A>(pgamma[k]) + shift);
          s1 += static_cast<double>(gw);
          s2 += static_cast<double>(gw) * static_cast<double>(xhat);
          if (dgamma) sum_gamma[k] += static_cast<double>(gv) * static_cast<double>(xhat);
          if (dbeta) sum_beta[k] += static_cast<double>(gv);
        }
        if (!dx) continue;
        const A mean1 = p.rms ? A(0) : static_cast<A>(s1 / static_cast<double>(s.n));
        const A mean2 = static_cast<A>(s2 / static_cast<double>(s.n));
        T* pdx = ptr<T>(*dx);
        for (int64_t k = 0; k < s.n; ++k) {
          const int64_t j = base + k * s.inner;
          const A xhat = (static_cast<A>(px[j]) - m) * r;
          const A gw = static_cast<A>(pg[j]) * (static_cast<A>(pgamma[k]) + shift);
          pdx[j] = T(r * (gw - mean1 - xhat * mean2));
        }
      }
    if (dgamma)
      for (int64_t k = 0; k < s.n; ++k) ptr<T>(*dgamma)[k] = T(static_cast<A>(sum_gamma[k]));
    if (dbeta)
      for (int64_t k = 0; k < s.n; ++k) ptr<T>(*dbeta)[k] = T(static_cast<A>(sum_beta[k]));
  });
}

}  // namespace axon::cpu_detail
