// CPU group-statistics normalization and shape kernels (axon/backend.h). Sums in double, results in
// the compute type.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "../norm_shape_kernels.h"
#include "../norm_shape_math.h"

namespace axon::cpu_detail {

namespace {

using kernels::Acc;
using kernels::ptr;

template <class F>
void floating(DType dtype, const char* kernel, F&& f) {
  kernels::dispatch_floating<bf16>(dtype, "cpu", kernel, std::forward<F>(f));
}

}  // namespace

void group_norm(const Tensor& x, const Tensor* gamma, const Tensor* beta, const GroupNormParams& p, Tensor& y,
                Tensor& mean, Tensor& rstd, Tensor* running_mean, Tensor* running_var) {
  floating(x.dtype(), "group_norm", [&]<class T>() {
    using A = Acc<T>;
    const T* px = ptr<T>(x);
    const T* pg = gamma ? ptr<T>(*gamma) : nullptr;
    const T* pb = beta ? ptr<T>(*beta) : nullptr;
    T* py = ptr<T>(y);
    A* pm = ptr<A>(mean);
    A* pr = ptr<A>(rstd);
    A* rm = running_mean ? ptr<A>(*running_mean) : nullptr;
    A* rv = running_var ? ptr<A>(*running_var) : nullptr;
    const int64_t n = p.lane_size();
    if (p.group_size == 1 && p.inner == 1) {
      // One channel per group, channels last (batch_norm and instance_norm on {batch, ..., C}):
      // walk the rows of C contiguous values once per pass instead of each channel's strided
      // lane, about 5× faster for a conv net's batch_norm. Each channel's sums run over the
      // positions in the same order as the general loop below, so the results are identical.
      const int64_t c = p.groups;
      std::vector<double> mu(static_cast<size_t>(c)), var(static_cast<size_t>(c));
      std::vector<A> m(static_cast<size_t>(c)), r(static_cast<size_t>(c));
      for (int64_t s = 0; s < p.samples; ++s) {
        const T* xs = px + s * n * c;
        T* ys = py + s * n * c;
        if (p.use_running) {
          for (int64_t g = 0; g < c; ++g) {
            mu[g] = static_cast<double>(rm[g]);
            var[g] = static_cast<double>(rv[g]);
          }
        } else {
          std::fill(mu.begin(), mu.end(), 0.0);
          std::fill(var.begin(), var.end(), 0.0);
          for (int64_t t = 0; t < n; ++t)
            for (int64_t g = 0; g < c; ++g) mu[g] += static_cast<double>(static_cast<A>(xs[t * c + g]));
          for (int64_t g = 0; g < c; ++g) mu[g] /= static_cast<double>(n);
          for (int64_t t = 0; t < n; ++t)
            for (int64_t g = 0; g < c; ++g) {
              const double d = static_cast<double>(static_cast<A>(xs[t * c + g])) - mu[g];
              var[g] += d * d;
            }
          for (int64_t g = 0; g < c; ++g) {
            var[g] /= static_cast<double>(n);
            if (p.update_running) {
              const double unbiased = n > 1 ? var[g] * static_cast<double>(n) / static_cast<double>(n - 1) : var[g];
              rm[g] = static_cast<A>((1.0 - p.momentum) * static_cast<double>(rm[g]) + p.momentum * mu[g]);
              rv[g] = static_cast<A>((1.0 - p.momentum) * static_cast<double>(rv[g]) + p.momentum * unbiased);
            }
          }
        }
        for (int64_t g = 0; g < c; ++g) {
          m[g] = static_cast<A>(mu[g]);
          r[g] = static_cast<A>(1.0 / std::sqrt(var[g] + p.eps));
          pm[s * c + g] = m[g];
          pr[s * c + g] = r[g];
        }
        for (int64_t t = 0; t < n; ++t)
          for (int64_t g = 0; g < c; ++g) {
            A v = (static_cast<A>(xs[t * c + g]) - m[g]) * r[g];
            if (pg) v *= static_cast<A>(pg[g]);
            if (pb) v += static_cast<A>(pb[g]);
            ys[t * c + g] = T(v);
          }
      }
      return;
    }
    for (int64_t s = 0; s < p.samples; ++s)
      for (int64_t g = 0; g < p.groups; ++g) {
        const int64_t lane = s * p.groups + g;
        double mu = 0.0, var = 0.0;
        if (p.use_running) {
          mu = static_cast<double>(rm[g]);
          var = static_cast<double>(rv[g]);
        } else {
          for (int64_t t = 0; t < n; ++t)
            mu += static_cast<double>(static_cast<A>(px[kernels::group_element(p, s, g, t).index]));
          mu /= static_cast<double>(n);
          for (int64_t t = 0; t < n; ++t) {
            const double d = static_cast<double>(static_cast<A>(px[kernels::group_element(p, s, g, t).index])) - mu;
            var += d * d;
          }
          var /= static_cast<double>(n);
          if (p.update_running) {
            const double unbiased = n > 1 ? var * static_cast<double>(n) / static_cast<double>(n - 1) : var;
            rm[g] = static_cast<A>((1.0 - p.momentum) * static_cast<double>(rm[g]) + p.momentum * mu);
            rv[g] = static_cast<A>((1.0 - p.momentum) * static_cast<double>(rv[g]) + p.momentum * unbiased);
          }
        }
        const A m = static_cast<A>(mu), r = static_cast<A>(1.0 / std::sqrt(var + p.eps));
        pm[lane] = m;
        pr[lane] = r;
        for (int64_t t = 0; t < n; ++t) {
          const kernels::GroupElement e = kernels::group_element(p, s, g, t);
          A v = (static_cast<A>(px[e.index]) - m) * r;
          if (pg) v *= static_cast<A>(pg[e.channel]);
          if (pb) v += static_cast<A>(pb[e.channel]);
          py[e.index] = T(v);
        }
      }
  });
}

void group_norm_backward(const Tensor& x, const Tensor* gamma, const Tensor& g, const Tensor& mean, const Tensor& rstd,
                         const GroupNormParams& p, Tensor* dx, Tensor* dgamma, Tensor* dbeta) {
  floating(x.dtype(), "group_norm_backward", [&]<class T>() {
    using A = Acc<T>;
    const T* px = ptr<T>(x);
    const T* pgamma = gamma ? ptr<T>(*gamma) : nullptr;
    const T* pg = ptr<T>(g);
    const A* pm = ptr<A>(mean);
    const A* pr = ptr<A>(rstd);
    const int64_t n = p.lane_size(), c = p.channels();
    std::vector<double> sum_gamma(dgamma ? static_cast<size_t>(c) : 0, 0.0), sum_beta(dbeta ? static_cast<size_t>(c) : 0, 0.0);
    if (p.group_size == 1 && p.inner == 1) {
      // Channels last, one channel per group: rows of c contiguous values, as in group_norm above
      // (the same sums in the same order as the general loop below).
      std::vector<double> s1(static_cast<size_t>(c)), s2(static_cast<size_t>(c));
      std::vector<A> mean1(static_cast<size_t>(c)), mean2(static_cast<size_t>(c));
      for (int64_t s = 0; s < p.samples; ++s) {
        const T* xs = px + s * n * c;
        const T* gs = pg + s * n * c;
        const A* ms = pm + s * c;
        const A* rs = pr + s * c;
        std::fill(s1.begin(), s1.end(), 0.0);
        std::fill(s2.begin(), s2.end(), 0.0);
        for (int64_t t = 0; t < n; ++t)
          for (int64_t k = 0; k < c; ++k) {
            const A xhat = (static_cast<A>(xs[t * c + k]) - ms[k]) * rs[k], gv = static_cast<A>(gs[t * c + k]);
            const A gw = pgamma ? gv * static_cast<A>(pgamma[k]) : gv;
            s1[k] += static_cast<double>(gw);
            s2[k] += static_cast<double>(gw) * static_cast<double>(xhat);
            if (dgamma) sum_gamma[k] += static_cast<double>(gv) * static_cast<double>(xhat);
            if (dbeta) sum_beta[k] += static_cast<double>(gv);
          }
        if (!dx) continue;
        for (int64_t k = 0; k < c; ++k) {
          mean1[k] = p.use_running ? A(0) : static_cast<A>(s1[k] / static_cast<double>(n));
          mean2[k] = p.use_running ? A(0) : static_cast<A>(s2[k] / static_cast<double>(n));
        }
        T* pdx = ptr<T>(*dx) + s * n * c;
        for (int64_t t = 0; t < n; ++t)
          for (int64_t k = 0; k < c; ++k) {
            const A xhat = (static_cast<A>(xs[t * c + k]) - ms[k]) * rs[k], gv = static_cast<A>(gs[t * c + k]);
            const A gw = pgamma ? gv * static_cast<A>(pgamma[k]) : gv;
            pdx[t * c + k] = T(rs[k] * (gw - mean1[k] - xhat * mean2[k]));
          }
      }
    } else {
      for (int64_t s = 0; s < p.samples; ++s)
        for (int64_t grp = 0; grp < p.groups; ++grp) {
          const int64_t lane = s * p.groups + grp;
          const A m = pm[lane], r = pr[lane];
          // Σ g·w and Σ g·w·x̂ over the lane (x̂ the normalized input, w the channel's scale).
          double s1 = 0.0, s2 = 0.0;
          for (int64_t t = 0; t < n; ++t) {
            const kernels::GroupElement e = kernels::group_element(p, s, grp, t);
            const A xhat = (static_cast<A>(px[e.index]) - m) * r, gv = static_cast<A>(pg[e.index]);
            const A gw = pgamma ? gv * static_cast<A>(pgamma[e.channel]) : gv;
            s1 += static_cast<double>(gw);
            s2 += static_cast<double>(gw) * static_cast<double>(xhat);
            if (dgamma) sum_gamma[e.channel] += static_cast<double>(gv) * static_cast<double>(xhat);
            if (dbeta) sum_beta[e.channel] += static_cast<double>(gv);
          }
          if (!dx) continue;
          // Batch statistics depend on x; running ones are constants.
          const A mean1 = p.use_running ? A(0) : static_cast<A>(s1 / static_cast<double>(n));
          const A mean2 = p.use_running ? A(0) : static_cast<A>(s2 / static_cast<double>(n));
          T* pdx = ptr<T>(*dx);
          for (int64_t t = 0; t < n; ++t) {
            const kernels::GroupElement e = kernels::group_element(p, s, grp, t);
            const A xhat = (static_cast<A>(px[e.index]) - m) * r, gv = static_cast<A>(pg[e.index]);
            const A gw = pgamma ? gv * static_cast<A>(pgamma[e.channel]) : gv;
            pdx[e.index] = T(r * (gw - mean1 - xhat * mean2));
          }
        }
    }
    if (dgamma)
      for (int64_t k = 0; k < c; ++k) ptr<T>(*dgamma)[k] = T(static_cast<A>(sum_gamma[k]));
    if (dbeta)
      for (int64_t k = 0; k < c; ++k) ptr<T>(*dbeta)[k] = T(static_cast<A>(sum_beta[k]));
  });
}

void axis_copy(const Tensor& src, int64_t src_n, int64_t src_offset, Tensor& dst, int64_t dst_n, int64_t dst_offset,
               int64_t outer, int64_t inner, int64_t count) {
  const size_t elem = dtype_size(src.dtype());
  const auto* ps = static_cast<const unsigned char*>(src.raw_data());
  auto* pd = static_cast<unsigned char*>(dst.raw_data());
  const size_t bytes = static_cast<size_t>(count * inner) * elem;
  for (int64_t o = 0; o < outer; ++o)
    std::memcpy(pd + static_cast<size_t>((o * dst_n + dst_offset) * inner) * elem,
                ps + static_cast<size_t>((o * src_n + src_offset) * inner) * elem, bytes);
}

void permute(const Tensor& x, const std::vector<int64_t>& perm, Tensor& out) {
  size_t rank = perm.size(), elem = dtype_size(x.dtype());
  // Strides of x in the order of out's dims.
  std::vector<int64_t> in_strides(rank), strides(rank), index(rank, 0), sizes(rank);
  int64_t stride = 1;
  for (size_t d = rank; d-- > 0;) {
    in_strides[d] = stride;
    stride *= x.size(static_cast<int64_t>(d));
  }
  for (size_t d = 0; d < rank; ++d) {
    strides[d] = in_strides[static_cast<size_t>(perm[d])];
    sizes[d] = out.size(static_cast<int64_t>(d));
  }
  // When the last axis stays last, whole rows are contiguous on both sides: copy rows (the
  // attention layer's head split and join) instead of single elements.
  if (rank > 1 && perm[rank - 1] == static_cast<int64_t>(rank) - 1) {
    elem *= static_cast<size_t>(sizes[rank - 1]);
    --rank;
  }
  const auto* px = static_cast<const unsigned char*>(x.raw_data());
  auto* po = static_cast<unsigned char*>(out.raw_data());
  const int64_t n = elem == 0 ? 0 : static_cast<int64_t>(out.nbytes() / elem);  // copies
  const size_t item = dtype_size(x.dtype());
  int64_t offset = 0;  // in elements of x
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(po + static_cast<size_t>(i) * elem, px + static_cast<size_t>(offset) * item, elem);
    // Odometer increment of out's index, keeping x's offset in step.
    for (size_t d = rank; d-- > 0;) {
      if (++index[d] < sizes[d]) {
        offset += strides[d];
        break;
      }
      offset -= strides[d] * (index[d] - 1);
      index[d] = 0;
    }
  }
}

void resize(const Tensor& x, const ResizeParams& p, Tensor& out) {
  floating(x.dtype(), "resize", [&]<class T>() {
    using A = Acc<T>;
    const T* px = ptr<T>(x);
    T* po = ptr<T>(out);
    for (int64_t o = 0; o < p.outer; ++o)
      for (int64_t h = 0; h < p.out_h; ++h) {
        const kernels::ResizeTap th = kernels::resize_tap(h, p.in_h, p.out_h, p.bilinear);
        for (int64_t w = 0; w < p.out_w; ++w) {
          const kernels::ResizeTap tw = kernels::resize_tap(w, p.in_w, p.out_w, p.bilinear);
          const A wh1 = static_cast<A>(th.w1), ww1 = static_cast<A>(tw.w1), wh0 = A(1) - wh1, ww0 = A(1) - ww1;
          auto at = [&](int64_t hh, int64_t ww, int64_t i) {
            return static_cast<A>(px[((o * p.in_h + hh) * p.in_w + ww) * p.inner + i]);
          };
          for (int64_t i = 0; i < p.inner; ++i) {
            const A v = wh0 * (ww0 * at(th.i0, tw.i0, i) + ww1 * at(th.i0, tw.i1, i)) +
                        wh1 * (ww0 * at(th.i1, tw.i0, i) + ww1 * at(th.i1, tw.i1, i));
            po[((o * p.out_h + h) * p.out_w + w) * p.inner + i] = T(v);
          }
        }
      }
  });
}

void resize_backward(const Tensor& g, const ResizeParams& p, Tensor& dx) {
  floating(g.dtype(), "resize_backward", [&]<class T>() {
    using A = Acc<T>;
    const T* pg = ptr<T>(g);
    A* pd = ptr<A>(dx);
    std::fill(pd, pd + dx.numel(), A(0));
    for (int64_t o = 0; o < p.outer; ++o)
      for (int64_t h = 0; h < p.out_h; ++h) {
        const kernels::ResizeTap th = kernels::resize_tap(h, p.in_h, p.out_h, p.bilinear);
        for (int64_t w = 0; w < p.out_w; ++w) {
          const kernels::ResizeTap tw = kernels::resize_tap(w, p.in_w, p.out_w, p.bilinear);
          const A wh1 = static_cast<A>(th.w1), ww1 = static_cast<A>(tw.w1), wh0 = A(1) - wh1, ww0 = A(1) - ww1;
          auto at = [&](int64_t hh, int64_t ww, int64_t i) -> A& { return pd[((o * p.in_h + hh) * p.in_w + ww) * p.inner + i]; };
          for (int64_t i = 0; i < p.inner; ++i) {
            const A v = static_cast<A>(pg[((o * p.out_h + h) * p.out_w + w) * p.inner + i]);
            at(th.i0, tw.i0, i) += wh0 * ww0 * v;
            at(th.i0, tw.i1, i) += wh0 * ww1 * v;
            at(th.i1, tw.i0, i) += wh1 * ww0 * v;
            at(th.i1, tw.i1, i) += wh1 * ww1 * v;
          }
        }
      }
  });
}

}  // namespace axon::cpu_detail
