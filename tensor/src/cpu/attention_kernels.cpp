// CPU kernels of the embedding gradient (a scatter-add of rows) and of memory-efficient
// scaled dot-product attention (axon/attention_ops.h).
//
// Attention follows FlashAttention (Dao et al. 2022, Algorithms 1 and 2) on the CPU: for each
// (batch, head), blocks of kQueryBlock queries meet blocks of kKeyBlock keys; the block's scores
// live in a {kQueryBlock, kKeyBlock} tile, an online softmax (running maximum m and sum l per
// query) rescales the output accumulator, and only the output and lse = m + log l are kept. The
// backward pass recomputes each tile's probabilities P = exp(s − lse) and never stores the
// {lq, lk} matrix either. (batch, head) pairs are independent and split over threads; each pair is
// computed in a fixed order, so results do not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <limits>
#include <thread>
#include <vector>

#include "../attention_kernels.h"
#include "../kernel_support.h"

namespace axon::cpu_detail {

namespace {

using kernels::ptr;

constexpr int64_t kQueryBlock = 32;
constexpr int64_t kKeyBlock = 64;

template <class F>
void dispatch_f32_f64(DType dtype, const char* kernel, F&& f) {
  switch (dtype) {
    case DType::f32: return f.template operator()<float>();
    case DType::f64: return f.template operator()<double>();
    default:
      throw std::invalid_argument(std::string("cpu kernel ") + kernel + ": dtype " + dtype_name(dtype) +
                                  " is not supported (f32 or f64; the front end widens bf16)");
  }
}

// Runs body(pair) for pair in [0, pairs) on up to num_threads() threads, when there is enough work
// to pay for starting them.
template <class F>
void for_pairs(int64_t pairs, double work_per_pair, F body) {
  int64_t threads = std::min<int64_t>(num_threads(), pairs);
  if (work_per_pair * static_cast<double>(pairs) < 2e5) threads = 1;
  if (threads <= 1) {
    for (int64_t i = 0; i < pairs; ++i) body(i);
    return;
  }
  std::vector<std::thread> pool;
  for (int64_t t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      for (int64_t i = t; i < pairs; i += threads) body(i);
    });
  for (auto& th : pool) th.join();
}

// Whether query i may attend key j.
inline bool allowed(const AttentionParams& p, const int32_t* mask_row, int64_t i, int64_t j) {
  if (p.causal && j > i) return false;
  return !(mask_row && mask_row[j] != 0);
}

template <class T>
void attention_pair(const AttentionParams& p, const T* q, const T* k, const T* v, const int32_t* mask_row, T* out,
                    T* lse) {
  const int64_t d = p.d, dv = p.dv;
  const T scale = static_cast<T>(p.scale);
  const T neg_inf = -std::numeric_limits<T>::infinity();
  std::vector<T> s(kQueryBlock * kKeyBlock), acc(kQueryBlock * dv), m(kQueryBlock), l(kQueryBlock);
  for (int64_t q0 = 0; q0 < p.lq; q0 += kQueryBlock) {
    const int64_t nq = std::min(kQueryBlock, p.lq - q0);
    std::fill(acc.begin(), acc.end(), T(0));
    std::fill(m.begin(), m.end(), neg_inf);
    std::fill(l.begin(), l.end(), T(0));
    const int64_t k_end = p.causal ? std::min(p.lk, q0 + nq) : p.lk;  // keys past the last query are all masked
    for (int64_t k0 = 0; k0 < k_end; k0 += kKeyBlock) {
      const int64_t nk = std::min(kKeyBlock, k_end - k0);
      for (int64_t a = 0; a < nq; ++a) {
        const T* qa = q + (q0 + a) * d;
        T* sa = s.data() + a * kKeyBlock;
        T block_max = neg_inf;
        for (int64_t b = 0; b < nk; ++b) {
          if (!allowed(p, mask_row, q0 + a, k0 + b)) {
            sa[b] = neg_inf;
            continue;
          }
          const T* kb = k + (k0 + b) * d;
          T dot = 0;
          for (int64_t c = 0; c < d; ++c) dot += qa[c] * kb[c];
          sa[b] = dot * scale;
          block_max = std::max(block_max, sa[b]);
        }
        if (block_max == neg_inf) continue;  // nothing to attend in this block
        const T m_new = std::max(m[a], block_max);
        const T alpha = std::exp(m[a] - m_new);  // 0 when m was −inf
        T* acc_a = acc.data() + a * dv;
        if (alpha != T(1))
          for (int64_t c = 0; c < dv; ++c) acc_a[c] *= alpha;
        T sum = 0;
        for (int64_t b = 0; b < nk; ++b) {
          if (sa[b] == neg_inf) continue;
          const T pb = std::exp(sa[b] - m_new);
          sum += pb;
          const T* vb = v + (k0 + b) * dv;
          for (int64_t c = 0; c < dv; ++c) acc_a[c] += pb * vb[c];
        }
        l[a] = l[a] * alpha + sum;
        m[a] = m_new;
      }
    }
    for (int64_t a = 0; a < nq; ++a) {
      T* o = out + (q0 + a) * dv;
      if (l[a] == T(0)) {  // every key masked: zeros, and lse +inf makes every probability 0 backward
        std::fill(o, o + dv, T(0));
        lse[q0 + a] = std::numeric_limits<T>::infinity();
        continue;
      }
      const T inv = T(1) / l[a];
      for (int64_t c = 0; c < dv; ++c) o[c] = acc[a * dv + c] * inv;
      lse[q0 + a] = m[a] + std::log(l[a]);
    }
  }
}

template <class T>
void attention_backward_pair(const AttentionParams& p, const T* q, const T* k, const T* v, const int32_t* mask_row,
                             const T* out, const T* lse, const T* dout, T* dq, T* dk, T* dv_out) {
  const int64_t d = p.d, dv = p.dv;
  const T scale = static_cast<T>(p.scale);
  std::fill(dq, dq + p.lq * d, T(0));
  std::fill(dk, dk + p.lk * d, T(0));
  std::fill(dv_out, dv_out + p.lk * dv, T(0));
  // delta_i = Σ_c dout[i, c]·out[i, c] = Σ_j P_ij·dP_ij: the softmax backward's row term.
  std::vector<T> delta(p.lq);
  for (int64_t i = 0; i < p.lq; ++i) {
    T acc = 0;
    for (int64_t c = 0; c < dv; ++c) acc += dout[i * dv + c] * out[i * dv + c];
    delta[i] = acc;
  }
  std::vector<T> prob(kKeyBlock);
  for (int64_t q0 = 0; q0 < p.lq; q0 += kQueryBlock) {
    const int64_t nq = std::min(kQueryBlock, p.lq - q0);
    const int64_t k_end = p.causal ? std::min(p.lk, q0 + nq) : p.lk;
    for (int64_t k0 = 0; k0 < k_end; k0 += kKeyBlock) {
      const int64_t nk = std::min(kKeyBlock, k_end - k0);
      for (int64_t a = 0; a < nq; ++a) {
        const int64_t i = q0 + a;
        if (std::isinf(lse[i])) continue;  // a query with nothing to attend: no gradient
        const T* qi = q + i * d;
        const T* gi = dout + i * dv;
        T* dqi = dq + i * d;
        for (int64_t b = 0; b < nk; ++b) {
          const int64_t j = k0 + b;
          if (!allowed(p, mask_row, i, j)) continue;
          const T* kj = k + j * d;
          const T* vj = v + j * dv;
          T dot = 0;
          for (int64_t c = 0; c < d; ++c) dot += qi[c] * kj[c];
          const T pij = std::exp(dot * scale - lse[i]);
          T dp = 0;
          for (int64_t c = 0; c < dv; ++c) {
            dv_out[j * dv + c] += pij * gi[c];
            dp += gi[c] * vj[c];
          }
          const T ds = pij * (dp - delta[i]) * scale;
          T* dkj = dk + j * d;
          for (int64_t c = 0; c < d; ++c) {
            dqi[c] += ds * kj[c];
            dkj[c] += ds * qi[c];
          }
        }
      }
    }
  }
}

}  // namespace

void index_add_rows(const Tensor& src, const Tensor& indices, Tensor& out) {
  dispatch_f32_f64(out.dtype(), "index_add_rows", [&]<class T>() {
    const int64_t k = indices.numel();
    const int64_t row = k == 0 ? 0 : src.numel() / k;
    const int64_t* idx = ptr<int64_t>(indices);
    const T* s = ptr<T>(src);
    T* o = ptr<T>(out);
    for (int64_t r = 0; r < k; ++r) {
      T* dst = o + idx[r] * row;
      const T* from = s + r * row;
      for (int64_t c = 0; c < row; ++c) dst[c] += from[c];
    }
  });
}

void attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* mask, const AttentionParams& p,
               Tensor& out, Tensor& lse) {
  dispatch_f32_f64(q.dtype(), "attention", [&]<class T>() {
    const T *qp = ptr<T>(q), *kp = ptr<T>(k), *vp = ptr<T>(v);
    const int32_t* mp = mask ? ptr<int32_t>(*mask) : nullptr;
    T *op = ptr<T>(out), *lp = ptr<T>(lse);
    for_pairs(p.batch * p.heads, static_cast<double>(p.lq * p.lk * (p.d + p.dv)), [&](int64_t bh) {
      const int64_t b = bh / p.heads;
      attention_pair<T>(p, qp + bh * p.lq * p.d, kp + bh * p.lk * p.d, vp + bh * p.lk * p.dv,
                        mp ? mp + b * p.lk : nullptr, op + bh * p.lq * p.dv, lp + bh * p.lq);
    });
  });
}

void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* mask, const Tensor& out,
                        const Tensor& lse, const Tensor& dout, const AttentionParams& p, Tensor& dq, Tensor& dk,
                        Tensor& dv) {
  dispatch_f32_f64(q.dtype(), "attention_backward", [&]<class T>() {
    const T *qp = ptr<T>(q), *kp = ptr<T>(k), *vp = ptr<T>(v), *op = ptr<T>(out), *lp = ptr<T>(lse),
            *gp = ptr<T>(dout);
    const int32_t* mp = mask ? ptr<int32_t>(*mask) : nullptr;
    T *dqp = ptr<T>(dq), *dkp = ptr<T>(dk), *dvp = ptr<T>(dv);
    for_pairs(p.batch * p.heads, 2.0 * static_cast<double>(p.lq * p.lk * (p.d + p.dv)), [&](int64_t bh) {
      const int64_t b = bh / p.heads;
      attention_backward_pair<T>(p, qp + bh * p.lq * p.d, kp + bh * p.lk * p.d, vp + bh * p.lk * p.dv,
                                 mp ? mp + b * p.lk : nullptr, op + bh * p.lq * p.dv, lp + bh * p.lq,
                                 gp + bh * p.lq * p.dv, dqp + bh * p.lq * p.d, dkp + bh * p.lk * p.d,
                                 dvp + bh * p.lk * p.dv);
    });
  });
}

}  // namespace axon::cpu_detail
