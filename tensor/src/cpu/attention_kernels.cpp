// CPU kernels of the embedding gradient (a scatter-add of rows) and of memory-efficient
// scaled dot-product attention (axon/attention_ops.h).
//
// Attention follows FlashAttention (Dao et al. 2022, Algorithms 1 and 2; the loop order of
// FlashAttention-2, Dao 2023) on the CPU: for each (batch, head), blocks of kQueryBlock queries meet
// blocks of kKeyBlock keys. The block's scores S = Q·Kᵀ live in a {kQueryBlock, kKeyBlock} tile, an
// online softmax (running maximum m and sum l per query) rescales the output accumulator, and only
// the output and lse = m + log l are kept. The backward pass recomputes each tile's probabilities
// P = exp(S − lse) and never stores the {lq, lk} matrix either. The tile products (S = Q·Kᵀ, P·V,
// and backward Pᵀ·dO, dO·Vᵀ, dS·K, dSᵀ·Q) are OpenBLAS GEMMs; the softmax between them is plain
// loops that vectorize (vector_math.h's exp). (batch, head) pairs are independent and split over
// threads; each pair is computed in a fixed order, so results do not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../attention_kernels.h"
#include "../blas.h"
#include "../kernel_support.h"
#include "axon/vector_math.h"
#include "parallel.h"

namespace axon::cpu_detail {

namespace {

using kernels::ptr;

// Tiles of 64×64: one GEMM per tile product for the sequences of a small language model, and
// small enough (64·64·d multiply-adds for d ≤ 64) that OpenBLAS runs them on the calling thread.
// With d > 64 OpenBLAS may start its own threads inside ours (correct, but oversubscribed).
// Masked keys take part in the products with probability 0, so an inf or NaN in v (or in dout)
// at a masked key still reaches the result (0·inf), as in PyTorch's math path.
constexpr int64_t kQueryBlock = 64;
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

// Row-major C = alpha·op(A)·op(B) + beta·C, op(X) = Xᵀ when the flag is set.
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
          const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  blas::sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(m), int(n), int(k),
              alpha, a, int(lda), b, int(ldb), beta, c, int(ldc));
}
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a, int64_t lda,
          const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  blas::dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(m), int(n), int(k),
              alpha, a, int(lda), b, int(ldb), beta, c, int(ldc));
}

inline float exp_v(float x) { return kernels::vmath::exp(x); }
inline double exp_v(double x) { return std::exp(x); }

// One thread's tiles, allocated once per call and reused for every (batch, head) pair it runs.
template <class T>
struct Workspace {
  std::vector<T> s, p2, acc, m, l;
  explicit Workspace(const AttentionParams& p)
      : s(kQueryBlock * kKeyBlock), p2(kQueryBlock * kKeyBlock), acc(kQueryBlock * std::max(p.d, p.dv)),
        m(kQueryBlock), l(kQueryBlock) {}
};

// Runs body(pair, workspace) for pair in [0, pairs) over the CPU threads (parallel.h), one
// workspace per thread's range of pairs, when there is enough work to wake them.
template <class T, class F>
void for_pairs(const AttentionParams& p, double work_per_pair, F body) {
  const int64_t pairs = p.batch * p.heads;
  const int64_t grain = work_per_pair * static_cast<double>(pairs) < 2e5 ? pairs : 1;
  parallel_for(pairs, grain, [&](int64_t begin, int64_t end) {
    Workspace<T> ws(p);
    for (int64_t i = begin; i < end; ++i) body(i, ws);
  });
}

// Sets the scores of the pairs that may not attend to −inf in a {nq, nk} tile (row stride kKeyBlock)
// whose first query is q0 and first key k0: keys after the query when causal, and keys whose
// padding-mask entry is nonzero.
template <class T>
void mask_tile(const AttentionParams& p, const int32_t* mask_row, int64_t q0, int64_t nq, int64_t k0, int64_t nk,
               T* s) {
  const T neg_inf = -std::numeric_limits<T>::infinity();
  for (int64_t a = 0; a < nq; ++a) {
    T* sa = s + a * kKeyBlock;
    if (p.causal)
      for (int64_t b = std::max<int64_t>(0, q0 + a - k0 + 1); b < nk; ++b) sa[b] = neg_inf;
    if (mask_row)
      for (int64_t b = 0; b < nk; ++b) sa[b] = mask_row[k0 + b] != 0 ? neg_inf : sa[b];
  }
}

template <class T>
AXON_SIMD_CLONES void attention_pair(const AttentionParams& p, const T* q, const T* k, const T* v, const int32_t* mask_row, T* out,
                    T* lse, Workspace<T>& ws) {
  const int64_t d = p.d, dv = p.dv;
  const T scale = static_cast<T>(p.scale);
  const T neg_inf = -std::numeric_limits<T>::infinity();
  T *s = ws.s.data(), *acc = ws.acc.data(), *m = ws.m.data(), *l = ws.l.data();
  for (int64_t q0 = 0; q0 < p.lq; q0 += kQueryBlock) {
    const int64_t nq = std::min(kQueryBlock, p.lq - q0);
    std::fill(acc, acc + nq * dv, T(0));
    std::fill(m, m + nq, neg_inf);
    std::fill(l, l + nq, T(0));
    const int64_t k_end = p.causal ? std::min(p.lk, q0 + nq) : p.lk;  // keys past the last query are all masked
    for (int64_t k0 = 0; k0 < k_end; k0 += kKeyBlock) {
      const int64_t nk = std::min(kKeyBlock, k_end - k0);
      gemm(false, true, nq, nk, d, scale, q + q0 * d, d, k + k0 * d, d, T(0), s, kKeyBlock);  // S = Q·Kᵀ·scale
      mask_tile(p, mask_row, q0, nq, k0, nk, s);
      for (int64_t a = 0; a < nq; ++a) {
        T* sa = s + a * kKeyBlock;
        // Maxima that keep NaN (std::max drops it): a NaN score must give a NaN output, as in
        // PyTorch, not the zeros of a query with nothing to attend.
        T block_max = neg_inf;
        for (int64_t b = 0; b < nk; ++b) block_max = (sa[b] > block_max || sa[b] != sa[b]) ? sa[b] : block_max;
        const T m_new = m[a] != m[a] ? m[a] : ((block_max > m[a] || block_max != block_max) ? block_max : m[a]);
        if (m_new == neg_inf) {  // nothing to attend yet: this row of P is all zero
          std::fill(sa, sa + nk, T(0));
          continue;
        }
        const T alpha = exp_v(m[a] - m_new);  // 0 when m was −inf
        T sum = 0;
        for (int64_t b = 0; b < nk; ++b) sa[b] = exp_v(sa[b] - m_new);  // exp(−inf) = 0 where masked
        for (int64_t b = 0; b < nk; ++b) sum += sa[b];
        T* acc_a = acc + a * dv;
        for (int64_t c = 0; c < dv; ++c) acc_a[c] *= alpha;
        l[a] = l[a] * alpha + sum;
        m[a] = m_new;
      }
      gemm(false, false, nq, dv, nk, T(1), s, kKeyBlock, v + k0 * dv, dv, T(1), acc, dv);  // acc += P·V
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
AXON_SIMD_CLONES void attention_backward_pair(const AttentionParams& p, const T* q, const T* k, const T* v, const int32_t* mask_row,
                             const T* out, const T* lse, const T* dout, T* dq, T* dk, T* dv_out, Workspace<T>& ws) {
  const int64_t d = p.d, dv = p.dv;
  const T scale = static_cast<T>(p.scale);
  std::fill(dq, dq + p.lq * d, T(0));
  std::fill(dk, dk + p.lk * d, T(0));
  std::fill(dv_out, dv_out + p.lk * dv, T(0));
  T *prob = ws.s.data(), *ds = ws.p2.data(), *delta = ws.m.data();
  for (int64_t q0 = 0; q0 < p.lq; q0 += kQueryBlock) {
    const int64_t nq = std::min(kQueryBlock, p.lq - q0);
    // delta_i = Σ_c dout[i, c]·out[i, c] = Σ_j P_ij·dP_ij: the softmax backward's row term.
    for (int64_t a = 0; a < nq; ++a) {
      T acc = 0;
      for (int64_t c = 0; c < dv; ++c) acc += dout[(q0 + a) * dv + c] * out[(q0 + a) * dv + c];
      delta[a] = acc;
    }
    const int64_t k_end = p.causal ? std::min(p.lk, q0 + nq) : p.lk;
    for (int64_t k0 = 0; k0 < k_end; k0 += kKeyBlock) {
      const int64_t nk = std::min(kKeyBlock, k_end - k0);
      gemm(false, true, nq, nk, d, scale, q + q0 * d, d, k + k0 * d, d, T(0), prob, kKeyBlock);  // S·scale
      mask_tile(p, mask_row, q0, nq, k0, nk, prob);
      for (int64_t a = 0; a < nq; ++a) {  // P = exp(S − lse); lse = +inf (nothing attended) gives 0
        T* pa = prob + a * kKeyBlock;
        const T row_lse = lse[q0 + a];
        for (int64_t b = 0; b < nk; ++b) pa[b] = exp_v(pa[b] - row_lse);
      }
      gemm(true, false, nk, dv, nq, T(1), prob, kKeyBlock, dout + q0 * dv, dv, T(1), dv_out + k0 * dv, dv);  // dV += Pᵀ·dO
      gemm(false, true, nq, nk, dv, T(1), dout + q0 * dv, dv, v + k0 * dv, dv, T(0), ds, kKeyBlock);  // dP = dO·Vᵀ
      for (int64_t a = 0; a < nq; ++a) {  // dS = P ∘ (dP − delta)·scale
        T* da = ds + a * kKeyBlock;
        const T* pa = prob + a * kKeyBlock;
        const T row_delta = delta[a];
        for (int64_t b = 0; b < nk; ++b) da[b] = pa[b] * (da[b] - row_delta) * scale;
      }
      gemm(false, false, nq, d, nk, T(1), ds, kKeyBlock, k + k0 * d, d, T(1), dq + q0 * d, d);  // dQ += dS·K
      gemm(true, false, nk, d, nq, T(1), ds, kKeyBlock, q + q0 * d, d, T(1), dk + k0 * d, d);  // dK += dSᵀ·Q
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
    for_pairs<T>(p, static_cast<double>(p.lq * p.lk * (p.d + p.dv)), [&](int64_t bh, Workspace<T>& ws) {
      const int64_t b = bh / p.heads;
      attention_pair<T>(p, qp + bh * p.lq * p.d, kp + bh * p.lk * p.d, vp + bh * p.lk * p.dv,
                        mp ? mp + b * p.lk : nullptr, op + bh * p.lq * p.dv, lp + bh * p.lq, ws);
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
    for_pairs<T>(p, 2.0 * static_cast<double>(p.lq * p.lk * (p.d + p.dv)), [&](int64_t bh, Workspace<T>& ws) {
      const int64_t b = bh / p.heads;
      attention_backward_pair<T>(p, qp + bh * p.lq * p.d, kp + bh * p.lk * p.d, vp + bh * p.lk * p.dv,
                                 mp ? mp + b * p.lk : nullptr, op + bh * p.lq * p.dv, lp + bh * p.lq,
                                 gp + bh * p.lq * p.dv, dqp + bh * p.lq * p.d, dkp + bh * p.lk * p.d,
                                 dvp + bh * p.lk * p.dv, ws);
    });
  });
}

}  // namespace axon::cpu_detail
